//! Data events for the events tests: an event type per test (each test's services bind only
//! its own name, so tests running together do not feed each other's services), a clean-up of
//! a service's queues and exchange, publishing many events with their confirms in flight, and
//! the `lepus-test-subscriber` process, which records every event it handles in a file.

use crate::queues::{Cleanup, amqp_url, unique_name};
use lepus::internal::topology::{partition_queue, service_queue, unslotted_exchange};
use lepus::{Broker, Client, Event, EventId, Publish};
use lepus_worker::{EventContext, JobError, State, Subscription, Worker, WorkerConfig};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::sync::{Arc, Mutex};

macro_rules! test_event {
    ($(#[$doc:meta])* $name:ident, $wire:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub struct $name {
            /// The test run that published it: handlers ignore other runs' events.
            pub run: String,
            /// Its number in the run.
            pub seq: u64,
            /// Its key, if any.
            #[serde(default)]
            pub key: Option<String>,
            /// Whether a handler that knows it fails on it.
            #[serde(default)]
            pub poison: bool,
        }

        impl Event for $name {
            const NAME: &'static str = $wire;

            fn key(&self) -> Option<String> {
                self.key.clone()
            }
        }

        impl $name {
            /// Event `seq` of `run`, keyed `key`.
            #[must_use]
            pub fn new(run: &str, seq: u64, key: Option<String>) -> Self {
                Self { run: run.to_owned(), seq, key, poison: false }
            }
        }
    };
}

test_event!(
    /// The fan-out test's event.
    Fanned,
    "test.fanout.happened"
);
test_event!(
    /// The down-service test's event.
    Waited,
    "test.downtime.happened"
);
test_event!(
    /// The per-key order test's event.
    Sequenced,
    "test.order.happened"
);
test_event!(
    /// The poison test's event.
    Poisoned,
    "test.poison.happened"
);
test_event!(
    /// The bad-input test's event.
    Checked,
    "test.bad.happened"
);
test_event!(
    /// The event a Python (kombu) publisher sends to Lepus services.
    Pythonic,
    "test.python.happened"
);
test_event!(
    /// The event Lepus publishes to a Python (kombu) subscriber.
    Heard,
    "test.python.heard"
);
test_event!(
    /// The event a Python publisher sends with properties only (no Lepus headers).
    Plain,
    "test.python.plain"
);
test_event!(
    /// The replay crash test's event.
    Resumed,
    "test.replay.resumed"
);

/// An in-process worker running `subscription` (no work queue, no remote control), with the
/// states `add_state` adds; stopped when the returned sender is dropped or sent to.
pub fn run_service(
    subscription: Subscription,
    add_state: impl FnOnce(Worker) -> Worker,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), lepus_worker::WorkerError>>) {
    let mut config = WorkerConfig::default().amqp_url(amqp_url()).queues(Vec::<String>::new());
    config.remote_control = false;
    let worker = add_state(Worker::new(config)).subscribe(subscription);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    (stop, tokio::spawn(worker.run(async { drop(stopped.await) })))
}

/// How many consumers `queue` has (0 if it does not exist).
pub async fn consumers_on(broker: &Broker, queue: &str) -> u32 {
    lepus::internal::topology::inspect_queue(broker, queue).await.ok().flatten().map_or(0, |q| q.consumers)
}

/// A unique service name and the clean-up of its queues (and partitions, and exchange).
#[must_use]
pub fn test_service(what: &str, partitions: Option<u16>) -> (String, Cleanup) {
    let name = unique_name(what);
    let mut cleanup = Cleanup::default();
    let queue = service_queue(&name);
    cleanup.queue(format!("{queue}.dlq"));
    cleanup.queue(queue.clone());
    for index in 0..partitions.unwrap_or(0) {
        cleanup.queue(partition_queue(&name, index));
    }
    cleanup.exchange(queue);
    if partitions.is_some() {
        cleanup.exchange(unslotted_exchange(&name));
    }
    (name, cleanup)
}

/// Publishes every event with up to 128 awaiting their confirm; returns their ids in order.
pub async fn publish_all<E: Event + Clone>(client: &Client, events: Vec<Publish<E>>) -> Vec<EventId> {
    let window = Arc::new(tokio::sync::Semaphore::new(128));
    let mut sending = tokio::task::JoinSet::new();
    for (index, event) in events.into_iter().enumerate() {
        let permit = Arc::clone(&window).acquire_owned().await.expect("open");
        let client = client.clone();
        sending.spawn(async move {
            let id = client.publish(event).await.expect("published and confirmed");
            drop(permit);
            (index, id)
        });
    }
    let mut ids = Vec::new();
    while let Some(sent) = sending.join_next().await {
        ids.push(sent.expect("joined"));
    }
    ids.sort_by_key(|(index, _)| *index);
    ids.into_iter().map(|(_, id)| id).collect()
}

/// One handled event as `lepus-test-subscriber` writes it: `<run> <key or -> <seq> <id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// The run that published it.
    pub run: String,
    /// Its key.
    pub key: Option<String>,
    /// Its number.
    pub seq: u64,
    /// Its id.
    pub id: String,
}

/// The events recorded in `path` so far.
#[must_use]
pub fn read_handled(path: &str) -> Vec<Handled> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let (run, key, seq, id) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            Some(Handled {
                run: run.to_owned(),
                key: (key != "-").then(|| key.to_owned()),
                seq: seq.parse().ok()?,
                id: id.to_owned(),
            })
        })
        .collect()
}

#[derive(Clone)]
struct Out(Arc<Mutex<std::fs::File>>);

fn record(out: &Out, run: &str, key: Option<&str>, seq: u64, ctx: &EventContext) -> Result<(), JobError> {
    // One write per line: processes sharing the file (opened to append) never interleave lines.
    let line = format!("{run} {} {seq} {}\n", key.unwrap_or("-"), ctx.id());
    let mut file = out.0.lock().map_err(|_| JobError::new("poisoned"))?;
    file.write_all(line.as_bytes()).map_err(|e| JobError::new(e.to_string()))
}

async fn on_waited(event: Waited, ctx: EventContext, State(out): State<Out>) -> Result<(), JobError> {
    record(&out, &event.run, event.key.as_deref(), event.seq, &ctx)
}

async fn on_sequenced(event: Sequenced, ctx: EventContext, State(out): State<Out>) -> Result<(), JobError> {
    record(&out, &event.run, event.key.as_deref(), event.seq, &ctx)
}

async fn on_pythonic(event: Pythonic, ctx: EventContext, State(out): State<Out>) -> Result<(), JobError> {
    record(&out, &event.run, event.key.as_deref(), event.seq, &ctx)
}

async fn on_resumed(event: Resumed, ctx: EventContext, State(out): State<Out>) -> Result<(), JobError> {
    if let Some(pause) = std::env::var("LEPUS_TEST_HANDLE_MS").ok().and_then(|ms| ms.parse().ok()) {
        tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
    }
    record(&out, &event.run, event.key.as_deref(), event.seq, &ctx)
}

/// `lepus-test-subscriber`: runs service `LEPUS_TEST_SERVICE` (ordered in
/// `LEPUS_TEST_PARTITIONS` partitions if set; replaying from `LEPUS_TEST_REPLAY` if set) for the
/// events `LEPUS_TEST_EVENT` names (`downtime`, `order`, `python` or `resumed`, whose handler
/// waits `LEPUS_TEST_HANDLE_MS` first if set), appending each handled event to `LEPUS_TEST_OUT`,
/// until SIGTERM/SIGINT.
pub fn subscriber_main() -> std::process::ExitCode {
    lepus::telemetry::init(lepus::telemetry::LogFormat::default());
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
    let file = std::fs::OpenOptions::new().create(true).append(true).open(var("LEPUS_TEST_OUT")).expect("output file");
    let out = Out(Arc::new(Mutex::new(file)));
    let mut subscription = Subscription::service(var("LEPUS_TEST_SERVICE"));
    subscription = match var("LEPUS_TEST_EVENT").as_str() {
        "downtime" => subscription.on(on_waited),
        "order" => subscription.on(on_sequenced),
        "python" => subscription.on(on_pythonic),
        "resumed" => subscription.on(on_resumed),
        other => panic!("unknown LEPUS_TEST_EVENT {other}"),
    };
    if let Ok(partitions) = std::env::var("LEPUS_TEST_PARTITIONS") {
        subscription = subscription.ordered(partitions.parse().expect("a number"));
    }
    if let Ok(from) = std::env::var("LEPUS_TEST_REPLAY") {
        subscription = subscription.replay(from.parse().expect("`first` or an RFC 3339 time"));
    }
    let mut config = WorkerConfig::default().amqp_url(amqp_url()).queues(Vec::<String>::new());
    config.remote_control = false;
    let worker = Worker::new(config).state(out).subscribe(subscription);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    match runtime.block_on(worker.run(lepus::shutdown_signal())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lepus-test-subscriber: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
