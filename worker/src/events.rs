//! [`Events`]: Celery's monitoring events from a Lepus worker, on the `celeryev` exchange:
//! `worker-online`, `worker-heartbeat` every [`HEARTBEAT`], `worker-offline` at a clean stop, and
//! the `task-*` events of each job.
//!
//! Events are fire-and-forget. A job's path only stamps an event (clock and time) and puts it in
//! a bounded buffer (never waits: when the buffer is full the event is dropped and counted); one
//! task publishes them on a channel of its own without publisher confirms. Task events go out in
//! batches, as a Celery worker sends them: up to [`BATCH`] in one `task.multi` message, at most
//! [`FLUSH`] after the first; worker events go out one by one, in order with the task events.
//! They are on with `--events` or when a monitor asks (`enable_events`, as Flower does), and off
//! again with `disable_events`. While they are off nothing is declared, built or sent.

use crate::activity::Activity;
use crate::outcome::{Ended, Outcome, Reply};
use lepus::dead_letter::Reason;
use lepus::internal::topology;
use lepus::lapin::Channel;
use lepus::lapin::options::BasicPublishOptions;
use lepus::protocol::events::Event;
use lepus::protocol::events::{TASK_MULTI, args_repr, kwargs_repr, properties, python_repr};
use lepus::protocol::{ExceptionInfo, TaskMessage};
use lepus::{Broker, JobId};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often a worker with events on says it is alive (Celery's default is 2 s, too).
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(2);

/// Events waiting to be published, at most; more are dropped.
const BUFFER: usize = 16_384;

/// Task events in one message, at most.
pub(crate) const BATCH: usize = 100;

/// How long a task event may wait for others to share its message.
pub(crate) const FLUSH: Duration = Duration::from_millis(100);

/// An event with the clock and time it happened at.
#[derive(Debug)]
struct Stamped {
    event: Event,
    clock: u64,
    timestamp: f64,
}

/// A worker's event dispatcher.
#[derive(Debug)]
pub(crate) struct Events {
    on: AtomicBool,
    node: Arc<str>,
    /// The worker's Lamport clock, shared with its remote control.
    clock: Arc<AtomicU64>,
    sender: mpsc::Sender<Stamped>,
    dropped: AtomicU64,
}

impl Events {
    /// A dispatcher for node `node` (on from the start if `on`), and the task that publishes
    /// its events until `stop`; it sends `worker-offline` before it ends if events are on.
    pub(crate) fn start(
        broker: Broker,
        node: Arc<str>,
        on: bool,
        clock: Arc<AtomicU64>,
        activity: Arc<Activity>,
        stop: CancellationToken,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(BUFFER);
        let events = Arc::new(Self { on: AtomicBool::new(false), node, clock, sender, dropped: AtomicU64::new(0) });
        if on {
            events.switch(true, &activity);
        }
        let publishing = tokio::spawn(publish(broker, Arc::clone(&events), receiver, activity, stop));
        (events, publishing)
    }

    /// Whether events are on.
    pub(crate) fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Turns events on or off; returns whether that changed anything. Turning them on announces
    /// the worker (`worker-online`), off says goodbye (`worker-offline`).
    pub(crate) fn switch(&self, on: bool, activity: &Activity) -> bool {
        if self.on.swap(on, Ordering::AcqRel) == on {
            return false;
        }
        let kind = if on { "worker-online" } else { "worker-offline" };
        self.push(Event::new(kind, worker_fields(activity)));
        true
    }

    /// Sends `event` if events are on; built only then.
    pub(crate) fn send(&self, event: impl FnOnce() -> Event) {
        if self.is_on() {
            self.push(event());
        }
    }

    /// Sends a `worker-heartbeat` now, if events are on.
    pub(crate) fn heartbeat(&self, activity: &Activity) {
        self.send(|| Event::new("worker-heartbeat", worker_fields(activity)));
    }

    fn push(&self, event: Event) {
        let clock = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        let stamped = Stamped { event, clock, timestamp: lepus::control::unix_now() };
        if self.sender.try_send(stamped).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "events dropped: the broker takes them slower than jobs make them");
            }
        }
    }
}

/// The fields of `worker-*` events, as a Celery worker sends them.
fn worker_fields(activity: &Activity) -> Vec<(&'static str, Value)> {
    vec![
        ("freq", Value::from(HEARTBEAT.as_secs_f64())),
        ("active", Value::from(activity.running())),
        ("processed", Value::from(activity.processed_total())),
        ("loadavg", Value::from(loadavg().to_vec())),
        ("sw_ident", Value::from("lepus-worker")),
        ("sw_ver", Value::from(env!("CARGO_PKG_VERSION"))),
        ("sw_sys", Value::from(std::env::consts::OS)),
    ]
}

/// The load averages of the last 1, 5 and 15 minutes (Linux), else zeros.
fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut loads = text.split_whitespace().filter_map(|field| field.parse().ok());
    [loads.next().unwrap_or(0.0), loads.next().unwrap_or(0.0), loads.next().unwrap_or(0.0)]
}

/// Publishes events until `stop`, with a heartbeat every [`HEARTBEAT`] while they are on; then
/// `worker-offline` and what is still buffered.
async fn publish(
    broker: Broker,
    events: Arc<Events>,
    mut receiver: mpsc::Receiver<Stamped>,
    activity: Arc<Activity>,
    stop: CancellationToken,
) {
    let mut out = Outbox::new(broker, Arc::clone(&events.node));
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flush_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = heartbeat.tick() => {
                if events.is_on() {
                    events.heartbeat(&activity);
                }
            }
            () = sleep_until(flush_at) => {
                out.flush().await;
                flush_at = None;
            }
            stamped = receiver.recv() => match stamped {
                Some(stamped) => {
                    out.take(stamped).await;
                    if out.gathered == 0 {
                        flush_at = None;
                    } else if flush_at.is_none() {
                        flush_at = Some(tokio::time::Instant::now() + FLUSH);
                    }
                }
                None => break,
            },
        }
    }
    if events.switch(false, &activity) {
        receiver.close();
        while let Some(stamped) = receiver.recv().await {
            out.take(stamped).await;
        }
    }
    out.flush().await;
    if let Some(channel) = out.channel {
        drop(channel.close(200, "events done".into()).await);
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Events on their way out: task events gathered, as the JSON array of one `task.multi`
/// message, in `tasks`.
struct Outbox {
    broker: Broker,
    node: Arc<str>,
    channel: Option<Channel>,
    /// `[` and the gathered events, `,` between them; empty when none is.
    tasks: Vec<u8>,
    gathered: usize,
}

impl Outbox {
    fn new(broker: Broker, node: Arc<str>) -> Self {
        Self { broker, node, channel: None, tasks: Vec::new(), gathered: 0 }
    }

    /// Gathers a task event (sending the batch once full), or sends a worker event at once,
    /// after the task events before it.
    async fn take(&mut self, stamped: Stamped) {
        let Stamped { event, clock, timestamp } = stamped;
        if event.kind.starts_with("task-") {
            self.tasks.push(if self.gathered == 0 { b'[' } else { b',' });
            event.write_json(&mut self.tasks, &self.node, clock, timestamp);
            self.gathered += 1;
            if self.gathered >= BATCH {
                self.flush().await;
            }
        } else {
            self.flush().await;
            let mut body = Vec::new();
            event.write_json(&mut body, &self.node, clock, timestamp);
            self.send(&event.routing_key(), &body).await;
        }
    }

    /// Sends the gathered task events in one message.
    async fn flush(&mut self) {
        if self.gathered == 0 {
            return;
        }
        // The buffer is lent to `send` and kept for the next batch, so its capacity is reused.
        let mut batch = std::mem::take(&mut self.tasks);
        batch.push(b']');
        self.gathered = 0;
        self.send(TASK_MULTI, &batch).await;
        batch.clear();
        self.tasks = batch;
    }

    /// Publishes one message, opening the events channel first if need be. A failure drops it
    /// and the channel (the next message opens a new one).
    async fn send(&mut self, key: &str, body: &[u8]) {
        if self.channel.as_ref().is_none_or(|c| !c.status().connected()) {
            self.channel = match open(&self.broker).await {
                Ok(opened) => Some(opened),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot open the events channel; events dropped");
                    return;
                }
            };
        }
        let Some(channel) = self.channel.as_ref() else { return };
        let publishing = channel.basic_publish(
            topology::EVENT_EXCHANGE.into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            properties(&self.node),
        );
        if let Err(e) = publishing.await {
            tracing::debug!(error = %e, "events not published");
            self.channel = None;
        }
    }
}

async fn open(broker: &Broker) -> lepus::Result<Channel> {
    let channel = broker.channel().await?;
    topology::declare_event_exchange(&channel).await?;
    Ok(channel)
}

/// `task-received`: a job message arrived and decoded.
pub(crate) fn received(message: &TaskMessage) -> Event {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| Value::from(t.to_rfc3339()));
    fields(
        "task-received",
        [
            ("uuid", Value::from(message.id.as_str())),
            ("name", Value::from(message.task.as_str())),
            ("args", Value::from(args_repr(&message.arguments.args))),
            ("kwargs", Value::from(kwargs_repr(&message.arguments.kwargs))),
            ("root_id", Value::from(message.root_id.clone().unwrap_or_else(|| message.id.to_string()))),
            ("parent_id", message.parent_id.clone().map_or(Value::Null, Value::from)),
            ("retries", Value::from(message.retries)),
            ("eta", time(message.eta).unwrap_or(Value::Null)),
            ("expires", time(message.expires).unwrap_or(Value::Null)),
        ],
    )
}

/// `task-started`: the handler of job `id` starts.
pub(crate) fn started(id: &JobId) -> Event {
    fields("task-started", [("uuid", Value::from(id.as_str()))])
}

/// The event that tells how job `id` was settled, if one does: `task-succeeded` (with its
/// `output` when no caller took it), `task-failed`, `task-retried`, `task-rejected` (not run: a
/// message the worker cannot run) or `task-revoked` (expired, revoked or terminated). A message
/// sent back to wait for its `eta` makes none.
pub(crate) fn settled(
    id: &JobId,
    outcome: &Outcome,
    output: Option<&Value>,
    ran_for: Option<Duration>,
) -> Option<Event> {
    let uuid = ("uuid", Value::from(id.as_str()));
    let runtime = ("runtime", Value::from(ran_for.unwrap_or_default().as_secs_f64()));
    fn result_of(reply: &Option<Reply>) -> Option<&lepus::protocol::ResultMessage> {
        reply.as_ref().map(|reply| &reply.result)
    }
    let event = match outcome {
        Outcome::Done { ended: Ended::Succeeded, reply, .. } => {
            let value = result_of(reply).map(|result| &result.result).or(output).unwrap_or(&Value::Null);
            fields("task-succeeded", [uuid, ("result", Value::from(python_repr(value))), runtime])
        }
        Outcome::Done { ended, .. } => fields(
            "task-revoked",
            [
                uuid,
                ("terminated", Value::from(*ended == Ended::Revoked && ran_for.is_some())),
                ("signum", Value::Null),
                ("expired", Value::from(*ended == Ended::Expired)),
            ],
        ),
        Outcome::DeadLetter { reason: Reason::Failed | Reason::DeliveryLimit, error, reply, .. } => {
            let exception = result_of(reply).and_then(|result| result.exception());
            let shown = exception.map_or_else(
                || format!("JobError({})", python_repr(&Value::from(error.as_str()))),
                |e| exception_repr(&e),
            );
            let traceback =
                result_of(reply).and_then(|result| result.traceback.clone()).map_or(Value::Null, Value::from);
            fields("task-failed", [uuid, ("exception", Value::from(shown)), ("traceback", traceback), runtime])
        }
        Outcome::DeadLetter { .. } => fields("task-rejected", [uuid, ("requeue", Value::from(false))]),
        Outcome::Reschedule { failure: Some(exception), .. } => fields(
            "task-retried",
            [uuid, ("exception", Value::from(exception_repr(exception))), ("traceback", Value::Null)],
        ),
        Outcome::Reschedule { failure: None, .. } => return None,
    };
    Some(event)
}

/// An exception as Python shows it: `ValueError('boom')`.
fn exception_repr(exception: &ExceptionInfo) -> String {
    format!("{}({})", exception.exc_type, python_repr(&Value::from(exception.message())))
}

fn fields<const N: usize>(kind: &'static str, fields: [(&'static str, Value); N]) -> Event {
    Event::new(kind, fields.into())
}
