//! Replay: a new service handles the history the event stream keeps, then goes live with no
//! event missed or handled twice at the switch (see the README's *Replay*).
//!
//! A service replays only when it is new (its queue does not exist) or when a replay of it was
//! cut short (its record queue `lepus.service.<name>.replay` exists). One process at a time
//! replays a service: it holds the exclusive lock queue `lepus.service.<name>.replay.lock`;
//! others wait for it, then find the replay done. The worker consumes its queues only after.
//!
//! 1. Publish the *bind marker* (confirmed) to the stream, then the record (where the replay
//!    starts, the bind marker's id), then declare and bind the service's queues. An event in the
//!    stream before the bind marker was routed before the binding existed: it is not in the
//!    queue. One after it may be.
//! 2. Wait [`BINDING_SETTLE`], then publish the *end marker*. Events published after it are in
//!    the queue (the binding took effect before); the pause covers an event routed just before
//!    the binding whose stream write lands late.
//! 3. Read the stream from `first` or the time, in order, until the end marker. Each event the
//!    patterns match (topic matching as the broker does) is run by the service's handler: a
//!    failure is retried in place by the subscription's policy, then dead-lettered to the
//!    service's `.dlq` with its reason, and the replay moves on. The ids of those after the bind
//!    marker go into the service's [`crate::subscription::Switch`].
//! 4. Delete the record queue and release the lock. The live consumer acks the deliveries whose
//!    id is in the switch set without running them.
//!
//! A process that dies mid-replay leaves the record: the next one to take the lock replays again
//! from the record's start and the same bind marker (what was handled before the crash is handled
//! again: at least once), then goes live.

use crate::delivery::Shared;
use crate::error::WorkerError;
use crate::execute::{self, Admission};
use crate::outcome::{Ended, Outcome};
use crate::subscription::{ReplayFrom, Service};
use futures_lite::StreamExt;
use lepus::dead_letter::Reason;
use lepus::event::EVENT_HEADER;
use lepus::internal::topology::{self, EVENT_LOG_STREAM, REPLAY_MARKER_HEADER};
use lepus::internal::{Outgoing, header_str, mark, persistent_json};
use lepus::lapin::BasicProperties;
use lepus::lapin::message::Delivery;
use lepus::lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lepus::lapin::types::{AMQPValue, FieldTable, LongString};
use lepus::{Broker, Envelope, Error, EventId, EventLog, ReplyCode, WorkQueue};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The pause between binding the service's queues and publishing the end marker.
pub(crate) const BINDING_SETTLE: Duration = Duration::from_secs(1);

/// Stream messages handed to the replay ahead of their ack.
const STREAM_PREFETCH: u16 = 2000;

/// Stream messages acked at once (`multiple`), well under [`STREAM_PREFETCH`].
const ACK_EVERY: u64 = 500;

/// How often the replay logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How often a process waiting for another's replay asks for the lock.
const LOCK_POLL: Duration = Duration::from_millis(500);

/// A replay under way, as its record queue keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    service: String,
    /// `first` or an RFC 3339 time.
    from: String,
    /// The id of the bind marker published before the queues were bound.
    bind_marker: String,
    started_at: String,
}

/// What a replay did.
#[derive(Debug, Default)]
struct Counts {
    /// Events handled (succeeded or dead-lettered).
    handled: u64,
    dead_lettered: u64,
    /// Events of other names (their patterns do not match).
    other: u64,
    /// Matching events that happened before the start time.
    before: u64,
    /// Stream messages that are no events.
    undecodable: u64,
    read: u64,
}

/// Replays `service` if it is new or its replay was cut short; returns once it may go live (or
/// the worker is stopping: the record stays for the next start).
pub(crate) async fn replay(
    broker: &Broker,
    service: &Service,
    shared: &Shared,
    log: &EventLog,
) -> Result<(), WorkerError> {
    let Some(from) = service.replay else { return Ok(()) };
    let name = service.topology.name();
    let Some(lock) = take_lock(broker, name, &shared.stop).await? else { return Ok(()) };
    let replayed = replay_locked(broker, service, from, shared, log).await;
    if lock.status().connected() {
        drop(lock.close(200, "replay done".into()).await);
    }
    replayed
}

/// Takes `service`'s replay lock, waiting while another process holds it; `None` if the worker
/// is told to stop meanwhile. The lock lasts as long as the returned channel.
async fn take_lock(
    broker: &Broker,
    service: &str,
    stop: &CancellationToken,
) -> lepus::Result<Option<lepus::lapin::Channel>> {
    let mut told = false;
    loop {
        let channel = broker.channel().await?;
        match topology::take_replay_lock(&channel, service).await {
            Ok(()) => return Ok(Some(channel)),
            Err(e) if e.reply_code() == Some(ReplyCode::ResourceLocked) => {
                if !told {
                    tracing::info!(service, "another process is replaying the service; waiting for it");
                    told = true;
                }
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(None),
            () = tokio::time::sleep(LOCK_POLL) => {}
        }
    }
}

async fn replay_locked(
    broker: &Broker,
    service: &Service,
    from: ReplayFrom,
    shared: &Shared,
    log: &EventLog,
) -> Result<(), WorkerError> {
    let name = service.topology.name();
    let record_queue = topology::replay_record_queue(name);
    let first_queue = service.topology.queues().first().map(|q| q.name().to_owned()).unwrap_or_default();
    let channel = broker.channel().await?;
    topology::declare_events(&channel, log).await?;
    let record = if topology::inspect_queue(broker, &record_queue).await?.is_some() {
        let record = read_record(broker, &record_queue).await?;
        tracing::info!(
            service = name,
            from = record.from,
            started_at = record.started_at,
            "resuming a replay that was cut short: it starts again from its start (events handled before are handled again)"
        );
        record
    } else if topology::inspect_queue(broker, &first_queue).await?.is_some() {
        tracing::info!(
            service = name,
            %from,
            "the service exists (its queue keeps its events): replay is for a new service; not replaying"
        );
        return Ok(());
    } else {
        let record = Record {
            service: name.to_owned(),
            from: from.to_string(),
            bind_marker: format!("{name}.bind.{}", EventId::random()),
            started_at: chrono::Utc::now().to_rfc3339(),
        };
        publish_marker(shared, &record.bind_marker).await?;
        topology::declare_replay_record(&channel, name).await?;
        let body = serde_json::to_vec(&record).map_err(|e| WorkerError::Config(format!("replay record: {e}")))?;
        let outgoing =
            Outgoing { exchange: "", routing_key: &record_queue, body: &body, properties: persistent_json() };
        shared.publisher.publish(outgoing).await?;
        tracing::info!(service = name, %from, "a new service: replaying the event stream before going live");
        record
    };
    let from: ReplayFrom = record.from.parse().map_err(WorkerError::Config)?;
    service.topology.declare(&channel).await?;
    tokio::time::sleep(BINDING_SETTLE).await;
    let end_marker = format!("{name}.end.{}", EventId::random());
    publish_marker(shared, &end_marker).await?;
    let started = Instant::now();
    let Some(counts) = read(broker, service, shared, from, &record.bind_marker, &end_marker).await? else {
        tracing::info!(service = name, "stopped during the replay; the next start resumes it");
        drop(channel.close(200, "stopped".into()).await);
        return Ok(());
    };
    topology::delete_replay_record(&channel, name).await?;
    drop(channel.close(200, "replayed".into()).await);
    tracing::info!(
        service = name,
        handled = counts.handled,
        dead_lettered = counts.dead_lettered,
        skipped_other_events = counts.other,
        skipped_before_start = counts.before,
        skipped_not_events = counts.undecodable,
        read = counts.read,
        also_in_queue = service.switch.len(),
        took = ?started.elapsed(),
        "replay done; going live"
    );
    Ok(())
}

/// The replay record, read without taking it (a quorum queue just declared may refuse reads
/// for a moment: tried for a few seconds).
async fn read_record(broker: &Broker, queue: &str) -> Result<Record, WorkerError> {
    let mut tries = 0;
    loop {
        match lepus::internal::records::newest(broker, queue, |r: &Record| r.started_at.clone()).await {
            Ok(Some(record)) => return Ok(record),
            Ok(None) => {
                return Err(WorkerError::Config(format!(
                    "{queue} holds no replay record: delete it to replay the service anew, or to skip replaying"
                )));
            }
            Err(e) if tries < 20 => {
                tries += 1;
                tracing::debug!(error = %e, "replay record not readable yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Publishes replay marker `id` to the stream, confirmed.
async fn publish_marker(shared: &Shared, id: &str) -> lepus::Result<()> {
    let properties = topology::replay_marker(id);
    shared.publisher.publish(Outgoing { exchange: "", routing_key: EVENT_LOG_STREAM, body: b"", properties }).await
}

/// Reads the stream from `from` to `end_marker`, handling the service's events; `None` if the
/// worker is told to stop first.
async fn read(
    broker: &Broker,
    service: &Service,
    shared: &Shared,
    from: ReplayFrom,
    bind_marker: &str,
    end_marker: &str,
) -> Result<Option<Counts>, WorkerError> {
    let name = service.topology.name();
    let channel = broker.channel().await?;
    channel
        .basic_qos(STREAM_PREFETCH, BasicQosOptions::default())
        .await
        .map_err(|source| Error::Amqp { operation: "basic.qos", source })?;
    let mut args = FieldTable::default();
    let offset = match from {
        ReplayFrom::First => AMQPValue::LongString(LongString::from("first")),
        ReplayFrom::Time(at) => AMQPValue::Timestamp(u64::try_from(at.timestamp()).unwrap_or_default()),
    };
    args.insert("x-stream-offset".into(), offset);
    let mut consumer = channel
        .basic_consume(EVENT_LOG_STREAM.into(), "".into(), BasicConsumeOptions::default(), args)
        .await
        .map_err(|source| Error::Amqp { operation: "basic.consume", source })?;
    let queues = service.topology.queues();
    let mut counts = Counts::default();
    let mut after_bind = false;
    let mut first_offset = None;
    let mut logged = Instant::now();
    let stop = &shared.stop;
    let outcome = loop {
        let delivery = tokio::select! {
            biased;
            () = stop.cancelled() => break None,
            next = consumer.next() => match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(source)) => break Some(Err(Error::Amqp { operation: "stream consume", source }.into())),
                None => break Some(Err(WorkerError::Config(format!("the replay's consumer of {EVENT_LOG_STREAM} was cancelled")))),
            },
        };
        counts.read += 1;
        let offset = stream_offset(&delivery.properties);
        if first_offset.is_none() {
            first_offset = offset;
            match from {
                ReplayFrom::Time(at) => tracing::info!(
                    service = name,
                    %at,
                    offset,
                    "replay starts at the stream's first chunk at or after the time (its oldest, if the time is older)"
                ),
                ReplayFrom::First => {
                    tracing::info!(service = name, offset, "replay starts at the stream's oldest event")
                }
            }
        }
        let marker = delivery.properties.headers().as_ref().and_then(|h| header_str(h, REPLAY_MARKER_HEADER));
        if let Some(marker) = marker {
            if marker == end_marker {
                drop(delivery.acker.ack(BasicAckOptions::default()).await);
                break Some(Ok(counts));
            }
            after_bind |= marker == bind_marker;
        } else if let Err(e) = event(&delivery, service, shared, &queues, from, after_bind, &mut counts).await {
            break Some(Err(e.into()));
        } else if stop.is_cancelled() {
            break None;
        }
        // A stream's acks only give credit back: one for many.
        if counts.read % ACK_EVERY == 0
            && let Err(source) = delivery.acker.ack(BasicAckOptions { multiple: true }).await
        {
            break Some(Err(Error::Amqp { operation: "stream ack", source }.into()));
        }
        if logged.elapsed() >= PROGRESS_EVERY {
            logged = Instant::now();
            tracing::info!(
                service = name,
                handled = counts.handled,
                dead_lettered = counts.dead_lettered,
                skipped = counts.other + counts.before + counts.undecodable,
                offset,
                first_offset,
                "replaying"
            );
        }
    };
    drop(channel.close(200, "replayed".into()).await);
    outcome.transpose()
}

/// One stream message that is not a marker: skipped, or handled (and counted); left unhandled
/// if the worker is told to stop meanwhile. An error only if a dead letter cannot be published.
async fn event(
    delivery: &Delivery,
    service: &Service,
    shared: &Shared,
    queues: &[WorkQueue],
    from: ReplayFrom,
    after_bind: bool,
    counts: &mut Counts,
) -> lepus::Result<()> {
    // Most of the stream is other services' events: passed over by name before the body is read.
    if name_of(&delivery.properties).is_some_and(|name| !service.matches(&name)) {
        counts.other += 1;
        return Ok(());
    }
    let Ok(envelope) = Envelope::decode(&delivery.properties, &delivery.data) else {
        counts.undecodable += 1;
        return Ok(());
    };
    if !service.matches(&envelope.name) {
        counts.other += 1;
        return Ok(());
    }
    let id = envelope.id.to_string();
    if matches!(from, ReplayFrom::Time(at) if envelope.occurred_at < at) {
        counts.before += 1;
    } else {
        let queue = &queues[usize::from(envelope.slot) % queues.len().max(1)];
        let span = tracing::info_span!("replay", event.id = %envelope.id, event.name = %envelope.name, service = %service.name);
        let Some(outcome) = tracing::Instrument::instrument(run(envelope, service, shared, queue), span).await else {
            return Ok(());
        };
        if let Outcome::DeadLetter { reason, error, attempts, .. } = outcome {
            let properties = mark(&delivery.properties, reason, &error, queue.name(), attempts);
            let dlq = queue.dead_letter_queue();
            let outgoing = Outgoing { exchange: "", routing_key: &dlq, body: &delivery.data, properties };
            shared.publisher.publish(outgoing).await?;
            if reason != Reason::Failed {
                tracing::warn!(queue = queue.name(), %reason, %error, "replayed event dead-lettered");
            }
            counts.dead_lettered += 1;
        }
        counts.handled += 1;
        shared.stats.count_replayed();
    }
    if after_bind {
        service.switch.insert(&id);
    }
    Ok(())
}

/// Runs one replayed event by the service's handler, retrying in place by its policy; its final
/// outcome (`Done` or `DeadLetter`); `None` if the worker is told to stop between attempts.
async fn run(envelope: Envelope, service: &Service, shared: &Shared, queue: &WorkQueue) -> Option<Outcome> {
    let refuse = |reason, error| Outcome::DeadLetter {
        reason,
        error,
        attempts: 0,
        reply: None,
        then: crate::outcome::FollowUps::default(),
    };
    if service.registry.get(&envelope.name).is_none() {
        let error = format!(
            "service {:?} has no handler for event {:?} (a pattern it binds matched it); it handles {:?}",
            service.name,
            envelope.name,
            service.registry.names()
        );
        return Some(refuse(Reason::UnknownEvent, error));
    }
    let (mut message, event) = service.message(envelope);
    let mut event = Arc::new(event.as_ref().clone().in_replay());
    // A retry's `eta` belongs to a queue copy; the stream keeps the event as published.
    message.eta = None;
    let job = match execute::admit(&message, queue.name(), &service.registry, &shared.revoked) {
        Admission::Run(job) => job,
        Admission::NotRun(outcome) => return Some(*outcome),
    };
    let no_terminate = CancellationToken::new();
    loop {
        let executed = execute::run_admitted(
            message.clone(),
            job,
            queue.name(),
            &shared.states,
            &shared.stop,
            &no_terminate,
            Some(Arc::clone(&event)),
        )
        .await;
        match executed.outcome {
            Outcome::Reschedule { retries, delay, ended: Ended::Retried, .. } => {
                shared.stats.count(Ended::Retried);
                tokio::select! {
                    () = shared.stop.cancelled() => return None,
                    () = tokio::time::sleep(delay) => {}
                }
                message.retries = retries;
                event = Arc::new(event.retried(retries));
            }
            Outcome::Reschedule { .. } => {
                return Some(refuse(Reason::Failed, "a replayed event asked to wait (eta); not replayed".to_owned()));
            }
            outcome => return Some(outcome),
        }
    }
}

/// An event's name as `Envelope::decode` reads it (header `x-lepus-event`, else property `type`),
/// without its body.
fn name_of(properties: &BasicProperties) -> Option<String> {
    let from_header = properties.headers().as_ref().and_then(|h| header_str(h, EVENT_HEADER)).map(|n| n.into_owned());
    from_header.or_else(|| properties.kind().as_ref().map(ToString::to_string)).filter(|n| !n.is_empty())
}

/// A stream delivery's offset (its `x-stream-offset` header).
fn stream_offset(properties: &BasicProperties) -> Option<i64> {
    match properties.headers().as_ref()?.inner().get("x-stream-offset")? {
        AMQPValue::LongLongInt(offset) => Some(*offset),
        AMQPValue::LongInt(offset) => Some(i64::from(*offset)),
        _ => None,
    }
}
