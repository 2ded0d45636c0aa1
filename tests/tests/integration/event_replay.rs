//! Replay on the real broker: a service created after its events were published handles them
//! from the stream `lepus.events.log`, then goes live with none missed or doubled at the switch;
//! a start time leaves out what happened before it; an existing service does not replay; a
//! replay cut short by a killed process is resumed by the next. The stream is shared by the
//! whole broker (other tests' and earlier runs' events are in it): each test has its own event
//! name, service and run id, and counts only its run's events.

use chrono::Utc;
use lepus::internal::topology::{
    ServiceTopology, inspect_queue, replay_lock_queue, replay_record_queue, service_queue,
};
use lepus::{Event, Publish};
use lepus_tests::{
    Resumed, amqp_url, connect, publish_all, read_handled, spawn, subscriber_binary, temp_file, test_service,
    unique_name, wait_until,
};
use lepus_worker::{EventContext, JobError, ReplayFrom, State, Subscription, Worker, WorkerConfig, WorkerStats};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

macro_rules! replay_event {
    ($name:ident, $wire:literal) => {
        #[derive(Debug, Clone, Serialize, Deserialize)]
        struct $name {
            run: String,
            seq: u64,
        }

        impl Event for $name {
            const NAME: &'static str = $wire;
        }
    };
}

replay_event!(Everything, "test.replay.everything");
replay_event!(Since, "test.replay.since");
replay_event!(Existing, "test.replay.existing");

/// Raw handler calls of one run, by seq (no deduplication), and how many came from the replay.
#[derive(Debug, Default)]
struct Calls {
    run: String,
    by_seq: Mutex<HashMap<u64, u32>>,
    replayed: AtomicU64,
    live: AtomicU64,
}

impl Calls {
    fn new(run: &str) -> Arc<Self> {
        Arc::new(Self { run: run.to_owned(), ..Self::default() })
    }

    fn call(&self, run: &str, seq: u64, ctx: &EventContext) {
        if run != self.run {
            return;
        }
        let counter = if ctx.replayed() { &self.replayed } else { &self.live };
        counter.fetch_add(1, Ordering::Relaxed);
        *self.by_seq.lock().expect("calls").entry(seq).or_default() += 1;
    }

    fn distinct(&self) -> usize {
        self.by_seq.lock().expect("calls").len()
    }

    /// Seqs in `range` not handled, and those handled more than once.
    fn missing_and_doubled(&self, range: std::ops::Range<u64>) -> (Vec<u64>, Vec<(u64, u32)>) {
        let calls = self.by_seq.lock().expect("calls");
        let missing = range.filter(|seq| !calls.contains_key(seq)).collect();
        let mut doubled: Vec<(u64, u32)> = calls.iter().filter(|(_, n)| **n > 1).map(|(s, n)| (*s, *n)).collect();
        doubled.sort_unstable();
        (missing, doubled)
    }
}

async fn on_everything(event: Everything, ctx: EventContext, State(c): State<Arc<Calls>>) -> Result<(), JobError> {
    c.call(&event.run, event.seq, &ctx);
    Ok(())
}

async fn on_since(event: Since, ctx: EventContext, State(c): State<Arc<Calls>>) -> Result<(), JobError> {
    c.call(&event.run, event.seq, &ctx);
    Ok(())
}

async fn on_existing(event: Existing, ctx: EventContext, State(c): State<Arc<Calls>>) -> Result<(), JobError> {
    c.call(&event.run, event.seq, &ctx);
    Ok(())
}

type Running = (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), lepus_worker::WorkerError>>);

/// An in-process worker running `subscription` (no work queue) with `calls` as its state, and its
/// stats; stopped when the sender is dropped or sent to.
fn run_service(subscription: Subscription, calls: &Arc<Calls>) -> (Running, Arc<WorkerStats>) {
    let mut config = WorkerConfig::default().amqp_url(amqp_url()).queues(Vec::<String>::new());
    config.remote_control = false;
    let worker = Worker::new(config).state(Arc::clone(calls)).subscribe(subscription);
    let stats = worker.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    ((stop, tokio::spawn(worker.run(async { drop(stopped.await) }))), stats)
}

async fn stop((stop, running): Running) {
    drop(stop);
    running.await.expect("joined").expect("the worker stopped cleanly");
}

/// A queue bound to event `name` for the test's duration, so that the events a test publishes
/// before its service exists are routed (not kept in the shared `lepus.events.unrouted`, where
/// thousands would push out what other tests look for); nothing consumes it.
async fn sink(client: &lepus::Client, name: &str) -> lepus_tests::Cleanup {
    let (sink, cleanup) = test_service("replay-sink", None);
    let channel = client.broker().channel().await.expect("channel");
    lepus::internal::topology::declare_events(&channel, &lepus::EventLog::default()).await.expect("events declared");
    let topology = ServiceTopology::new(&sink, vec![name.to_owned()], None, 5).expect("valid");
    topology.declare(&channel).await.expect("sink declared");
    drop(channel.close(200, "declared".into()).await);
    cleanup
}

/// The test service `what` and its clean-up, the replay's queues included.
fn replay_service(what: &str) -> (String, lepus_tests::Cleanup) {
    let (name, mut cleanup) = test_service(what, None);
    cleanup.queue(replay_record_queue(&name));
    cleanup.queue(replay_lock_queue(&name));
    (name, cleanup)
}

#[tokio::test]
async fn a_new_service_replays_5000_events_then_goes_live_with_none_missed_or_doubled() {
    const HISTORY: u64 = 5_000;
    const LIVE: u64 = 2_000;
    let run = unique_name("replay-all");
    let client = connect().await;
    let _sink = sink(&client, Everything::NAME).await;
    let history = (0..HISTORY).map(|seq| Publish::new(Everything { run: run.clone(), seq })).collect();
    publish_all(&client, history).await;

    let (name, _cleanup) = replay_service("replay-all");
    let calls = Calls::new(&run);
    // Published from before the service exists until after its replay: 25 events every 100 ms.
    let publishing = tokio::spawn({
        let (client, run) = (client.clone(), run.clone());
        async move {
            for batch in 0..LIVE / 25 {
                let events =
                    (0..25).map(|i| Publish::new(Everything { run: run.clone(), seq: HISTORY + batch * 25 + i }));
                publish_all(&client, events.collect()).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let subscription = Subscription::service(&name).on(on_everything).replay(ReplayFrom::First);
    let (running, stats) = run_service(subscription, &calls);
    publishing.await.expect("published");
    let total = usize::try_from(HISTORY + LIVE).expect("small");
    // `first` reads the whole stream, every test's and benchmark's events of the last days.
    wait_until("every event is handled", Duration::from_secs(900), || {
        let handled = calls.distinct();
        async move { handled >= total }
    })
    .await;
    // Anything handled twice would come now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop(running).await;

    let (missing, doubled) = calls.missing_and_doubled(0..HISTORY + LIVE);
    let (replayed, live) = (calls.replayed.load(Ordering::Relaxed), calls.live.load(Ordering::Relaxed));
    println!(
        "replay: {replayed} of this run's events handled from the stream, {live} live from the queue, {} skipped \
         at the switch (handled by the replay, then delivered by the queue); {} events replayed in all (other \
         runs' events of this name too); missing {}, doubled {}",
        stats.skipped_at_switch(),
        stats.replayed(),
        missing.len(),
        doubled.len()
    );
    assert!(missing.is_empty(), "events never handled: {missing:?}");
    assert!(doubled.is_empty(), "events handled more than once: {doubled:?}");
    assert!(replayed >= HISTORY, "the history came from the stream: {replayed}");
    assert!(live > 0, "events published after the replay came live");
    assert!(stats.skipped_at_switch() > 0, "events published while the queue was bound were skipped once");
    assert_eq!(replayed + live, HISTORY + LIVE);
}

#[tokio::test]
async fn a_replay_from_a_time_leaves_out_what_happened_before_it() {
    let run = unique_name("replay-since");
    let client = connect().await;
    let _sink = sink(&client, Since::NAME).await;
    let before = (0..200).map(|seq| Publish::new(Since { run: run.clone(), seq })).collect();
    publish_all(&client, before).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let since = Utc::now();
    let after = (200..500).map(|seq| Publish::new(Since { run: run.clone(), seq })).collect();
    publish_all(&client, after).await;

    let (name, _cleanup) = replay_service("replay-since");
    let calls = Calls::new(&run);
    let subscription = Subscription::service(&name).on(on_since).replay(ReplayFrom::Time(since));
    let (running, _) = run_service(subscription, &calls);
    wait_until("the events after the time are handled", Duration::from_secs(120), || {
        let handled = calls.distinct();
        async move { handled >= 300 }
    })
    .await;
    let live = (500..600).map(|seq| Publish::new(Since { run: run.clone(), seq })).collect();
    publish_all(&client, live).await;
    wait_until("the live events are handled", Duration::from_secs(60), || {
        let handled = calls.distinct();
        async move { handled >= 400 }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop(running).await;

    let (missing, doubled) = calls.missing_and_doubled(200..600);
    assert!(missing.is_empty() && doubled.is_empty(), "missing {missing:?}, doubled {doubled:?}");
    let early: Vec<u64> = calls.by_seq.lock().expect("calls").keys().copied().filter(|seq| *seq < 200).collect();
    assert!(early.is_empty(), "events before the time were handled: {early:?}");
    assert_eq!(calls.replayed.load(Ordering::Relaxed), 300, "the 300 after the time came from the stream");
    println!("replay from a time: 200 before it left out, 300 replayed, 100 live");
}

#[tokio::test]
async fn an_existing_service_ignores_replay_and_handles_its_queue_once() {
    let run = unique_name("replay-existing");
    let client = connect().await;
    let _sink = sink(&client, Existing::NAME).await;
    let (name, _cleanup) = replay_service("replay-existing");
    // Before the service exists: in the stream only.
    let unseen = (0..100).map(|seq| Publish::new(Existing { run: run.clone(), seq })).collect();
    publish_all(&client, unseen).await;

    let calls = Calls::new(&run);
    let (running, _) = run_service(Subscription::service(&name).on(on_existing), &calls);
    let queue = service_queue(&name);
    let broker = client.broker().clone();
    wait_until("the service consumes its queue", Duration::from_secs(30), || async {
        inspect_queue(&broker, &queue).await.ok().flatten().is_some_and(|q| q.consumers == 1)
    })
    .await;
    let published = (100..200).map(|seq| Publish::new(Existing { run: run.clone(), seq })).collect();
    publish_all(&client, published).await;
    wait_until("the service handles its events", Duration::from_secs(60), || {
        let handled = calls.distinct();
        async move { handled >= 100 }
    })
    .await;
    stop(running).await;
    // While it is down: they wait in its queue.
    let waiting = (200..300).map(|seq| Publish::new(Existing { run: run.clone(), seq })).collect();
    publish_all(&client, waiting).await;

    let subscription = Subscription::service(&name).on(on_existing).replay(ReplayFrom::First);
    let (running, stats) = run_service(subscription, &calls);
    wait_until("the waiting events are handled", Duration::from_secs(60), || {
        let handled = calls.distinct();
        async move { handled >= 200 }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop(running).await;

    let (missing, doubled) = calls.missing_and_doubled(100..300);
    assert!(missing.is_empty() && doubled.is_empty(), "missing {missing:?}, doubled {doubled:?}");
    let early = calls.by_seq.lock().expect("calls").keys().filter(|seq| **seq < 100).count();
    assert_eq!(early, 0, "no replay: events from before the service existed are not handled");
    assert_eq!((stats.replayed(), calls.replayed.load(Ordering::Relaxed)), (0, 0));
}

/// Starts `lepus-test-subscriber` for `service` replaying from `from`, handling `Resumed`
/// events (each after `pause_ms`), appending what it handles to `out`.
fn start_replaying(service: &str, from: &str, out: &str, pause_ms: u64) -> lepus_tests::Process {
    let mut command = Command::new(subscriber_binary());
    command
        .env("LEPUS_TEST_SERVICE", service)
        .env("LEPUS_TEST_EVENT", "resumed")
        .env("LEPUS_TEST_REPLAY", from)
        .env("LEPUS_TEST_HANDLE_MS", pause_ms.to_string())
        .env("LEPUS_TEST_OUT", out)
        .env("RUST_LOG", "warn");
    spawn(command, service)
}

#[tokio::test]
async fn a_replay_cut_short_by_a_killed_process_is_resumed_by_the_next_and_none_is_lost() {
    const HISTORY: u64 = 3_000;
    const LIVE: u64 = 500;
    let run = unique_name("replay-crash");
    let client = connect().await;
    let _sink = sink(&client, Resumed::NAME).await;
    // From a time (the stream may hold millions of other tests' events: `first` is the first test's).
    let from = ReplayFrom::Time(Utc::now() - chrono::TimeDelta::seconds(1)).to_string();
    let broker = client.broker().clone();
    let history = (0..HISTORY).map(|seq| Publish::new(Resumed::new(&run, seq, None))).collect();
    publish_all(&client, history).await;

    let (service, _cleanup) = replay_service("replay-crash");
    let ours =
        |path: &str| read_handled(path).into_iter().filter(|h| h.run == run).map(|h| h.seq).collect::<Vec<u64>>();
    let first_out = temp_file("replay-crash-first");
    let mut first = start_replaying(&service, &from, &first_out, 2);
    wait_until("the first process has replayed 500", Duration::from_secs(120), || {
        let handled = ours(&first_out).len();
        async move { handled >= 500 }
    })
    .await;
    first.kill();
    let cut_at = ours(&first_out).len();
    let record = replay_record_queue(&service);
    let left = inspect_queue(&broker, &record).await.expect("inspected");
    assert!(left.is_some(), "the killed replay left its record in {record}");

    let live = (HISTORY..HISTORY + LIVE).map(|seq| Publish::new(Resumed::new(&run, seq, None))).collect();
    publish_all(&client, live).await;
    let second_out = temp_file("replay-crash-second");
    let mut second = start_replaying(&service, &from, &second_out, 0);
    let total = usize::try_from(HISTORY + LIVE).expect("small");
    wait_until("the second process has handled every event", Duration::from_secs(300), || {
        let handled = ours(&second_out).len();
        async move { handled >= total }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    second.stop(Duration::from_secs(10)).await.expect("stopped");

    let first_seqs = ours(&first_out);
    let mut second_seqs = ours(&second_out);
    second_seqs.sort_unstable();
    let doubled_within_second = second_seqs.windows(2).filter(|w| w[0] == w[1]).count();
    second_seqs.dedup();
    println!(
        "replay cut short after {cut_at} of {HISTORY} events (killed); the next process resumed it from the start: \
         {} distinct events of {}, {doubled_within_second} twice in it; handled twice in all: {} (what the killed \
         process had handled)",
        second_seqs.len(),
        HISTORY + LIVE,
        first_seqs.len()
    );
    assert_eq!(second_seqs, (0..HISTORY + LIVE).collect::<Vec<u64>>(), "none lost");
    assert_eq!(doubled_within_second, 0, "the resumed replay and the live queue handle each event once");
    assert!(first_seqs.iter().all(|seq| *seq < HISTORY), "the killed process never went live");
    let gone = inspect_queue(&broker, &record).await.expect("inspected");
    assert!(gone.is_none(), "the finished replay deleted its record");
}
