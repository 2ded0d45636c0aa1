//! One delivery, start to finish: decode it (a job, or a service's event: see
//! [`crate::subscription`]), decide its outcome (see [`crate::execute`]), and settle it: publish
//! what has to be published, wait for the broker's confirms, then ack.
//!
//! | outcome       | published first                                          | then |
//! |---------------|----------------------------------------------------------|------|
//! | `Done`        | its follow-ups (canvas), then the result to `reply_to` (`SUCCESS`, `FAILURE`, `REVOKED`) | ack |
//! | `DeadLetter`  | the message to `<queue>.dlq` with the reason, its follow-ups, and a `FAILURE` to `reply_to` | ack |
//! | `Reschedule`  | the message, with new `retries`/`eta`, into the delay cascade | ack |
//!
//! A unique job (`x-lepus-unique-key`) that ends for good (`Done`, `DeadLetter`) has its lock
//! released before its follow-ups and its result are published (after its dead letter, if any;
//! see [`crate::unique`]).
//!
//! A job of a tracked batch that ends (`Done` or `DeadLetter`) also gets its batch record
//! published to `lepus.batch.records` before the ack (see `lepus::batch`).
//!
//! If a publish fails the delivery is nacked back to the queue: it is redelivered, and the
//! queue's delivery limit ends any loop. A delivery whose channel died meanwhile is left alone:
//! the broker has already requeued it.

use crate::acks::Acks;
use crate::activity::Activity;
use crate::batch_records::BatchRecords;
use crate::event_context::EventContext;
use crate::events::{self, Events};
use crate::execute::{self, Admission, Executed};
use crate::metrics::{JobSeries, Metrics};
use crate::outcome::{Ended, FollowUps, Outcome, Reply};
use crate::rate_limits::RateLimits;
use crate::registry::Registry;
use crate::revoked::Revoked;
use crate::slots;
use crate::states::States;
use crate::stats::WorkerStats;
use crate::subscription::Service;
use crate::unique;
use chrono::Utc;
use lepus::dead_letter::Reason;
use lepus::internal::topology::{self, DelayedRoute, MAX_DELAY};
use lepus::internal::{Outgoing, Publisher, Record, delivery_count, mark, rescheduled};
use lepus::lapin::BasicProperties;
use lepus::lapin::message::Delivery;
use lepus::protocol::TaskMessage;
use lepus::{Broker, Envelope, Error, WorkQueue};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What every delivery needs from the worker.
pub(crate) struct Shared {
    pub(crate) broker: Broker,
    pub(crate) registry: Registry,
    pub(crate) states: Arc<States>,
    pub(crate) publisher: Publisher,
    /// Where finished batch jobs' records go, coalesced.
    pub(crate) batch_records: BatchRecords,
    pub(crate) stop: CancellationToken,
    pub(crate) max_payload: usize,
    pub(crate) broker_timeout: Duration,
    /// How long a job waits for a slot of its concurrency key.
    pub(crate) slot_wait: Duration,
    /// The channels kept for slots.
    pub(crate) slot_channels: Arc<slots::SlotChannels>,
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) metrics: Metrics,
    pub(crate) activity: Arc<Activity>,
    pub(crate) revoked: Arc<Revoked>,
    pub(crate) events: Arc<Events>,
    /// The rate limits this process knows, and their gates.
    pub(crate) rate_limits: RateLimits,
}

impl Shared {
    /// Counts a delivery settled as `ended`, in the stats and in the job's metrics.
    fn count(&self, series: &JobSeries, ended: Ended) {
        self.stats.count(ended);
        series.count(ended);
    }
}

/// Processes one delivery (of a work queue, or of `service`'s queue: an event); holds its
/// concurrency permit until the delivery is settled.
pub(crate) async fn process(
    delivery: Delivery,
    queue: Arc<WorkQueue>,
    service: Option<Arc<Service>>,
    shared: Arc<Shared>,
    acks: Acks,
    permit: OwnedSemaphorePermit,
) {
    // Given up while the job waits for a rate limit's token (see `crate::rate_limits`).
    let mut permit = Some(permit);
    let series = shared.metrics.queue(queue.name());
    series.in_flight.increment(1.0);
    let refuse =
        |reason, error| Outcome::DeadLetter { reason, error, attempts: 0, reply: None, then: FollowUps::default() };
    let decoded = if delivery.data.len() > shared.max_payload {
        let error =
            format!("body of {} bytes exceeds the worker's limit of {} bytes", delivery.data.len(), shared.max_payload);
        Err(refuse(Reason::TooLarge, error))
    } else if let Some(service) = &service {
        match Envelope::decode(&delivery.properties, &delivery.data) {
            Ok(envelope) if service.switch.take(envelope.id.as_str()) => {
                // The replay handled it (see `crate::replay`): acked, not run again.
                tracing::debug!(event.id = %envelope.id, service = %service.name, "handled by the replay; skipped");
                if acks.ack(delivery.delivery_tag).await {
                    shared.stats.count_skipped_at_switch();
                }
                series.in_flight.decrement(1.0);
                drop(permit);
                return;
            }
            Ok(envelope) if service.registry.get(&envelope.name).is_none() => Err(refuse(
                Reason::UnknownEvent,
                format!(
                    "service {:?} has no handler for event {:?} (a pattern it binds matched it); it handles {:?}",
                    service.name,
                    envelope.name,
                    service.registry.names()
                ),
            )),
            Ok(envelope) => {
                let (message, event) = service.message(envelope);
                Ok((message, Some(event)))
            }
            Err(e) => Err(refuse(Reason::Undecodable, e.to_string())),
        }
    } else {
        TaskMessage::decode(&delivery.properties, &delivery.data)
            .map(|message| (message, None))
            .map_err(|e| refuse(Reason::Undecodable, e.to_string()))
    };
    match decoded {
        Ok((message, event)) => {
            let span = match &service {
                None => tracing::info_span!("job", job.id = %message.id, job.name = %message.task),
                Some(service) => {
                    tracing::info_span!("event", event.id = %message.id, event.name = %message.task, service = %service.name)
                }
            };
            async {
                // Celery's monitoring events are about jobs: an event handled is none of theirs.
                let monitored = service.is_none();
                if monitored {
                    shared.events.send(|| events::received(&message));
                }
                let job = series.job(Some(&message.task));
                let id = (monitored && shared.events.is_on()).then(|| message.id.clone());
                let registry = service.as_ref().map_or(&shared.registry, |service| &service.registry);
                let name = registry.get(&message.task).map(|job| Arc::clone(&job.name));
                let batch = Record::of(&message, false);
                let ordered = service.as_ref().is_some_and(|s| s.ordered());
                let run = Run { registry, event, ordered, series: job, permit: &mut permit };
                let executed = execute_one(message, run, &delivery, &queue, &shared).await;
                if let Some(ran_for) = executed.ran_for {
                    job.ran_for(ran_for);
                }
                let event = id
                    .and_then(|id| events::settled(&id, &executed.outcome, executed.output.as_ref(), executed.ran_for));
                if let Some(ended) = settle(&delivery, &queue, &shared, &acks, executed.outcome, batch).await {
                    shared.count(job, ended);
                    if ended.is_final() {
                        shared.activity.processed(name.as_deref().unwrap_or_default());
                    }
                    if let Some(event) = event {
                        shared.events.send(|| event);
                    }
                }
            }
            .instrument(span)
            .await;
        }
        Err(refused) => {
            if let Some(ended) = settle(&delivery, &queue, &shared, &acks, refused, None).await {
                shared.count(series.job(None), ended);
            }
        }
    }
    series.in_flight.decrement(1.0);
    drop(permit);
}

/// How to run one decoded message: by which handlers, for which event (if it is one), in place
/// or not, counted where.
struct Run<'a> {
    registry: &'a Registry,
    event: Option<Arc<EventContext>>,
    /// An ordered partition's event: retried in place, before the next event of the partition.
    ordered: bool,
    series: &'a JobSeries,
    /// The delivery's concurrency permit (given up while it waits for a rate limit's token).
    permit: &'a mut Option<OwnedSemaphorePermit>,
}

/// What becomes of a decoded job: refused at the delivery limit, not admitted (unknown,
/// revoked, expired, early), or run, registered as running meanwhile. An ordered partition's
/// event that fails is run again here after its backoff, until it succeeds or fails for good:
/// sending it round the delay cascade would let the events after it overtake it.
async fn execute_one(
    mut message: TaskMessage,
    run: Run<'_>,
    delivery: &Delivery,
    queue: &WorkQueue,
    shared: &Shared,
) -> Executed {
    let Run { registry, mut event, ordered, series, permit } = run;
    let handed_out = delivery_count(&delivery.properties);
    if let Some(refused) = execute::past_delivery_limit(&message, queue.name(), handed_out, queue.delivery_limit()) {
        return refused.into();
    }
    let job = match execute::admit(&message, queue.name(), registry, &shared.revoked) {
        Admission::Run(job) => job,
        Admission::NotRun(outcome) => return (*outcome).into(),
    };
    // Jobs only: an event's order and delivery are its service's, not a rate limit's.
    if event.is_none()
        && let Some(outcome) = shared.rate_limits.wait_turn(&message, job, queue.name(), permit).await
    {
        return outcome.into();
    }
    // A job with a concurrency key runs only while it holds one of the key's slots.
    let headers = delivery.properties.headers().as_ref();
    let mut slot = match slots::take_for(
        &message,
        queue.name(),
        headers,
        &shared.broker,
        &shared.slot_channels,
        shared.slot_wait,
        &shared.stop,
    )
    .await
    {
        Ok(slot) => slot,
        Err(outcome) => return (*outcome).into(),
    };
    let running = shared.activity.start(&message, queue.name(), delivery.redelivered);
    shared.events.send(|| events::started(&message.id));
    loop {
        let attempt = ordered.then(|| message.clone());
        let retries = message.retries;
        let run = execute::run_admitted(
            message,
            job,
            queue.name(),
            &shared.states,
            &shared.stop,
            &running.cancel,
            event.clone(),
        );
        let executed = slots::holding(slot.as_mut(), retries, &running.cancel, run).await;
        match (attempt, &executed.outcome) {
            (Some(again), Outcome::Reschedule { retries, delay, ended: Ended::Retried, .. }) => {
                if let Some(ran_for) = executed.ran_for {
                    series.ran_for(ran_for);
                }
                shared.count(series, Ended::Retried);
                tokio::time::sleep(*delay).await;
                message = TaskMessage { retries: *retries, eta: None, ..again };
                event = event.map(|event| Arc::new(event.retried(*retries)));
            }
            _ => return executed,
        }
    }
}

/// Publishes what `outcome` needs, then acks (or, if a publish failed, hands the delivery
/// back); how the delivery ended, if it was acked.
async fn settle(
    delivery: &Delivery,
    queue: &WorkQueue,
    shared: &Shared,
    acks: &Acks,
    outcome: Outcome,
    batch: Option<Record>,
) -> Option<Ended> {
    if !delivery.acker.usable() {
        // The channel died while the job ran: the broker has already requeued the message and
        // will deliver it again, so publishing anything now would only make duplicates.
        tracing::warn!("the broker connection was lost during the job; the broker will redeliver it");
        return None;
    }
    let published = match outcome {
        Outcome::Done { reply, ended, then } => {
            unique::release(&delivery.properties, ended, &shared.broker).await;
            follow(then, reply, queue, shared).await.map(|()| ended)
        }
        Outcome::DeadLetter { reason, error, attempts, reply, then } => {
            let properties = mark(&delivery.properties, reason, &error, queue.name(), attempts);
            let dlq = queue.dead_letter_queue();
            let outgoing = Outgoing { exchange: "", routing_key: &dlq, body: &delivery.data, properties };
            match shared.publisher.publish(outgoing).await {
                Ok(()) => {
                    if reason != Reason::Failed {
                        tracing::warn!(queue = queue.name(), %reason, %error, "message dead-lettered");
                    }
                    let ended = if reason == Reason::Failed { Ended::Failed } else { Ended::DeadLettered };
                    unique::release(&delivery.properties, ended, &shared.broker).await;
                    follow(then, reply, queue, shared).await.map(|()| ended)
                }
                Err(e) => Err(format!("cannot dead-letter to {dlq}: {e}")),
            }
        }
        Outcome::Reschedule { retries, eta, delay, ended, .. } => {
            let properties = rescheduled(&delivery.properties, retries, Some(eta));
            let route = delayed_route(queue.name(), delay);
            publish_routed(queue.name(), route.as_ref(), &delivery.data, properties, shared)
                .await
                .map(|()| ended)
                .map_err(|e| format!("cannot reschedule: {e}"))
        }
    };
    let recorded = match (published, batch) {
        (Ok(ended), Some(record)) if ended.is_final() => {
            let record = Record { ok: ended == Ended::Succeeded, ..record };
            shared.batch_records.record(record).await.map(|()| ended)
        }
        (published, _) => published,
    };
    match recorded {
        Ok(ended) => {
            if acks.ack(delivery.delivery_tag).await {
                return Some(ended);
            }
            tracing::warn!(
                delivery_tag = delivery.delivery_tag,
                "ack failed (connection lost?); the broker will redeliver the message"
            );
        }
        Err(why) => {
            tracing::error!(error = why, "message returned to its queue for redelivery");
            acks.requeue(delivery.delivery_tag).await;
        }
    }
    None
}

/// Sends what follows a job by its canvas: each message to its queue (through the delay cascade
/// if it has a countdown), then the results of the chain steps that will not run; then the job's
/// own result, `reply`. A message for a queue that does not exist is kept in this queue's
/// dead-letter queue as `unroutable`, naming the queue it was for, where `requeue` sends it once
/// that queue exists.
async fn follow(then: FollowUps, reply: Option<Reply>, queue: &WorkQueue, shared: &Shared) -> Result<(), String> {
    for (to, message) in then.messages {
        let (body, properties) = message.encode().map_err(|e| format!("cannot encode a follow-up: {e}"))?;
        let delay = message.eta.and_then(|eta| (eta - Utc::now()).to_std().ok()).unwrap_or_default();
        let route = delayed_route(&to, delay);
        // The cascade takes any message: bind its destination, which asks whether it exists.
        let missing = match &route {
            Some(_) => !topology::bind_delayed_destination(&shared.broker, &to).await.map_err(|e| e.to_string())?,
            None => false,
        };
        let published = if missing {
            Err(Error::Unroutable { exchange: String::new(), routing_key: to.clone(), reason: String::new() })
        } else {
            publish_routed(&to, route.as_ref(), &body, properties.clone(), shared).await
        };
        match published {
            Ok(()) => {}
            Err(Error::Unroutable { .. }) => {
                let error =
                    format!("no queue named {to:?}: the follow-up {} ({}) is kept here", message.task, message.id);
                tracing::error!(
                    follow_up = message.task,
                    queue = to,
                    "a canvas follow-up has no queue; kept as a dead letter"
                );
                let properties = mark(&properties, Reason::Unroutable, &error, &to, 0);
                let dlq = queue.dead_letter_queue();
                let outgoing = Outgoing { exchange: "", routing_key: &dlq, body: &body, properties };
                shared.publisher.publish(outgoing).await.map_err(|e| format!("cannot keep a follow-up: {e}"))?;
                shared.count(shared.metrics.queue(queue.name()).job(Some(&message.task)), Ended::DeadLettered);
            }
            Err(e) => return Err(format!("cannot send a follow-up to {to}: {e}")),
        }
    }
    for reply in then.replies.into_iter().map(Some).chain([reply]) {
        answer(reply, shared).await?;
    }
    Ok(())
}

/// The route through the delay cascade for a message to `queue` that waits `delay` (at most
/// [`MAX_DELAY`]); `None` if it need not wait.
fn delayed_route(queue: &str, delay: Duration) -> Option<DelayedRoute> {
    topology::delayed_route(queue, delay.min(MAX_DELAY)).ok().flatten()
}

/// Publishes `body` for `queue`: through the delay cascade by `route`, else straight to it.
async fn publish_routed(
    queue: &str,
    route: Option<&DelayedRoute>,
    body: &[u8],
    properties: BasicProperties,
    shared: &Shared,
) -> Result<(), Error> {
    let (exchange, routing_key) = match route {
        Some(route) => (route.exchange, route.routing_key.as_str()),
        None => ("", queue),
    };
    shared.publisher.publish(Outgoing { exchange, routing_key, body, properties }).await
}

/// Publishes the reply, if any. A caller whose reply queue is gone is not an error. A result
/// returned as unroutable while the reply queue still exists (a cluster node's loss can do that
/// for a moment) is published again, until the broker timeout; then the delivery is handed back.
async fn answer(reply: Option<Reply>, shared: &Shared) -> Result<(), String> {
    let Some(Reply { to, correlation_id, result }) = reply else { return Ok(()) };
    let (body, properties) = result.encode(&correlation_id).map_err(|e| format!("cannot encode the result: {e}"))?;
    let deadline = tokio::time::Instant::now() + shared.broker_timeout;
    loop {
        let outgoing = Outgoing { exchange: "", routing_key: &to, body: &body, properties: properties.clone() };
        match shared.publisher.publish(outgoing).await {
            Ok(()) => return Ok(()),
            Err(Error::Unroutable { .. }) => match topology::inspect_queue(&shared.broker, &to).await {
                Ok(None) => {
                    tracing::warn!(reply_to = to, "the caller's reply queue is gone; result dropped");
                    return Ok(());
                }
                _ if tokio::time::Instant::now() >= deadline => {
                    return Err(format!("the result to {to} stayed unroutable for {:?}", shared.broker_timeout));
                }
                _ => {
                    tracing::info!(
                        reply_to = to,
                        "the result came back unroutable, its queue exists: sending it again"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            Err(e) => return Err(format!("cannot publish the result: {e}")),
        }
    }
}
