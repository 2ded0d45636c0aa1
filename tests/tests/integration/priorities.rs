//! Priority tiers: `Request::priority` (or `Job::priority`) sends a job to `<q>.high`, `<q>` or
//! `<q>.low`, and a worker with `priorities` consumes the three. Under strict order a new high
//! job starts before any low job that was not already in the worker: the number of low jobs that
//! start after a high job is published and before it starts stays within the low tier's
//! prefetch (2 × concurrency). Under weights 6,3,1 the first starts split 6:3:1. Without the
//! setting the worker consumes the queue alone. The worker runs in this test process; the
//! handlers record the order in which jobs start.

use lepus::{Job, Priority, Request, WorkQueue};
use lepus_tests::{TestQueue, amqp_url, connect, unique_name, wait_until, worker_binary};
use lepus_worker::{JobContext, JobError, Priorities, State, Worker, WorkerConfig};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A job that records its start (its tier and the moment), then sleeps.
#[derive(Debug, Serialize, Deserialize)]
struct Tiered {
    tier: Priority,
    millis: u64,
}

impl Job for Tiered {
    const NAME: &'static str = "test.tiered";
    type Output = ();
}

/// A job type whose jobs go to the high tier unless the request says otherwise.
#[derive(Debug, Serialize, Deserialize)]
struct Urgent;

impl Job for Urgent {
    const NAME: &'static str = "test.urgent";
    type Output = ();

    fn priority() -> Priority {
        Priority::High
    }
}

/// The starts, in order, and the ids of the jobs started.
#[derive(Debug, Clone, Default)]
struct Starts(Arc<Mutex<Vec<(Priority, Instant)>>>, Arc<Mutex<std::collections::HashSet<String>>>);

impl Starts {
    fn list(&self) -> Vec<(Priority, Instant)> {
        self.0.lock().expect("not poisoned").clone()
    }

    /// How many distinct jobs started.
    fn distinct(&self) -> usize {
        self.1.lock().expect("not poisoned").len()
    }
}

async fn tiered(job: Tiered, State(starts): State<Starts>, ctx: JobContext) -> Result<(), JobError> {
    starts.0.lock().expect("not poisoned").push((job.tier, Instant::now()));
    starts.1.lock().expect("not poisoned").insert(ctx.id().to_string());
    tokio::time::sleep(Duration::from_millis(job.millis)).await;
    Ok(())
}

/// A queue's three tiers, declared as a worker declares them; deleted (with their dead-letter
/// queues) when dropped.
struct Tiers {
    high: TestQueue,
    normal: TestQueue,
    low: TestQueue,
}

impl Tiers {
    async fn declare(what: &str) -> Self {
        let base = WorkQueue::new(unique_name(what)).expect("valid");
        let [high, normal, low] = lepus::internal::topology::tier_queues(&base).expect("valid tiers");
        Tiers {
            high: TestQueue::declare_with(high).await,
            normal: TestQueue::declare_with(normal).await,
            low: TestQueue::declare_with(low).await,
        }
    }

    fn name(&self) -> &str {
        self.normal.name()
    }
}

/// A worker in this process on `queue`, stopped by the sender.
fn start(queue: &str, concurrency: u16, order: Option<Priorities>, starts: &Starts) -> Running {
    start_with(WorkerConfig::default().queues([queue]).concurrency(concurrency), order, starts)
}

fn start_with(config: WorkerConfig, order: Option<Priorities>, starts: &Starts) -> Running {
    let mut config = config.amqp_url(amqp_url());
    config.priorities = order;
    config.grace_period = Duration::from_secs(10);
    let worker = Worker::new(config).state(starts.clone()).register(tiered).register(urgent);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async { drop(stopped.await) }));
    Running { stop, running }
}

async fn urgent(_job: Urgent) -> Result<(), JobError> {
    Ok(())
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    running: tokio::task::JoinHandle<Result<(), lepus_worker::WorkerError>>,
}

impl Running {
    async fn stop(self) {
        self.stop.send(()).expect("the worker runs");
        self.running.await.expect("joined").expect("the worker stopped cleanly");
    }
}

async fn enqueue_many(client: &lepus::Client, queue: &str, tier: Priority, n: usize, millis: u64) {
    let requests = (0..n).map(|_| Request::new(Tiered { tier, millis }).queue(queue).priority(tier));
    for sent in client.enqueue_many(requests).await {
        sent.expect("enqueued");
    }
}

#[tokio::test]
async fn under_strict_order_a_new_high_job_overtakes_every_low_job_not_yet_prefetched() {
    const CONCURRENCY: u16 = 1;
    const LOW_PREFETCH: usize = 2 * CONCURRENCY as usize;
    const PROBES: usize = 5;
    let tiers = Tiers::declare("prio-strict").await;
    let client = connect().await;
    enqueue_many(&client, tiers.name(), Priority::Low, 200, 100).await;
    let starts = Starts::default();
    let worker = start(tiers.name(), CONCURRENCY, Some(Priorities::Strict), &starts);
    wait_until("the worker runs low jobs", Duration::from_secs(30), || async { starts.list().len() >= 3 }).await;

    // One high job at a time, each once the one before has started: how many low jobs start
    // between its publish and its start?
    let mut overtaking = Vec::new();
    for probe in 0..PROBES {
        let published = Instant::now();
        client
            .enqueue(
                Request::new(Tiered { tier: Priority::High, millis: 50 }).queue(tiers.name()).priority(Priority::High),
            )
            .await
            .expect("enqueued");
        wait_until("the high job starts", Duration::from_secs(30), || async {
            starts.list().iter().filter(|(tier, _)| *tier == Priority::High).count() > probe
        })
        .await;
        let list = starts.list();
        let high_start = list.iter().filter(|(tier, _)| *tier == Priority::High).nth(probe).expect("started").1;
        let lows =
            list.iter().filter(|(tier, at)| *tier == Priority::Low && *at > published && *at < high_start).count();
        println!(
            "probe {probe}: {lows} low job(s) started after the high job was published and before it started ({:?} from publish to start)",
            high_start - published
        );
        overtaking.push(lows);
        // Let a few low jobs run before the next probe.
        let seen = list.len();
        wait_until("more low jobs run", Duration::from_secs(30), || async { starts.list().len() >= seen + 3 }).await;
    }
    // A burst of high jobs: while any is left, a low job starts only when a slot frees while the
    // next high delivery is still on its way (the broker refills a tier a round trip after an
    // ack), from what the worker held. With the tiers' prefetch equal to the concurrency that
    // happened at nearly every start (29 of 30); with twice the concurrency, rarely.
    const BURST: usize = 30;
    let before = starts.list().len();
    let published = Instant::now();
    enqueue_many(&client, tiers.name(), Priority::High, BURST, 50).await;
    wait_until("the burst has started", Duration::from_secs(30), || async {
        starts.list().iter().filter(|(tier, at)| *tier == Priority::High && *at > published).count() == BURST
    })
    .await;
    let list = starts.list();
    let last_high = list.iter().rev().find(|(tier, _)| *tier == Priority::High).expect("started").1;
    let lows_in_burst =
        list[before..].iter().filter(|(tier, at)| *tier == Priority::Low && *at > published && *at < last_high).count();
    println!("burst of {BURST} high jobs: {lows_in_burst} low job(s) started between its publish and its last start");
    assert!(lows_in_burst <= 2 * LOW_PREFETCH, "{lows_in_burst} low jobs started during the burst of {BURST}");

    let most = overtaking.iter().copied().max().unwrap_or(0);
    println!(
        "low jobs overtaking a high job, per probe: {overtaking:?}; most {most}; the low tier's prefetch {LOW_PREFETCH}"
    );
    assert!(most <= LOW_PREFETCH, "at most the low tier's prefetch ({LOW_PREFETCH}) may start ahead: {overtaking:?}");
    let started = starts.list().len();
    assert!(started < 150, "the backlog was still there: only {started} jobs started");
    assert!(tiers.low.ready().await > 50, "low jobs still wait in the broker, not in the worker");
    worker.stop().await;
    client.close().await.expect("closed");
    drop(tiers);
}

#[tokio::test]
async fn weighted_order_splits_the_starts_six_three_one_while_every_tier_has_work() {
    const EACH: usize = 150;
    const COUNTED: usize = 200;
    let tiers = Tiers::declare("prio-weighted").await;
    let client = connect().await;
    for tier in Priority::ALL {
        enqueue_many(&client, tiers.name(), tier, EACH, 5).await;
    }
    let starts = Starts::default();
    let worker = start(tiers.name(), 2, Some(Priorities::Weighted([6, 3, 1])), &starts);
    wait_until("the first starts", Duration::from_secs(60), || async { starts.list().len() >= COUNTED }).await;
    worker.stop().await;

    let first: Vec<Priority> = starts.list().into_iter().take(COUNTED).map(|(tier, _)| tier).collect();
    let count = |tier| first.iter().filter(|t| **t == tier).count();
    let (high, normal, low) = (count(Priority::High), count(Priority::Normal), count(Priority::Low));
    println!("first {COUNTED} starts by tier: high {high}, normal {normal}, low {low} (6:3:1 would be 120, 60, 20)");
    assert!((105..=135).contains(&high), "high {high} of {COUNTED}, expected 120 ± 15");
    assert!((45..=75).contains(&normal), "normal {normal} of {COUNTED}, expected 60 ± 15");
    assert!((10..=30).contains(&low), "low {low} of {COUNTED}, expected 20 ± 10");
    client.close().await.expect("closed");
    drop(tiers);
}

#[tokio::test]
async fn without_priorities_only_the_queue_itself_is_consumed_and_a_job_type_picks_its_tier() {
    let tiers = Tiers::declare("prio-plain").await;
    let client = connect().await;
    // The job type's tier, and the request's over it.
    client.enqueue(Request::new(Urgent).queue(tiers.name())).await.expect("enqueued");
    client.enqueue(Request::new(Urgent).queue(tiers.name()).priority(Priority::Low)).await.expect("enqueued");
    client.enqueue(Request::new(Urgent).queue(tiers.name()).priority(Priority::Normal)).await.expect("enqueued");
    assert_eq!((tiers.high.ready().await, tiers.normal.ready().await, tiers.low.ready().await), (1, 1, 1));

    let starts = Starts::default();
    let worker = start(tiers.name(), 4, None, &starts);
    tiers.normal.wait_for_consumers(1).await;
    wait_until("the normal job ran", Duration::from_secs(20), || async { tiers.normal.ready().await == 0 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let consumers = (tiers.high.consumers().await, tiers.normal.consumers().await, tiers.low.consumers().await);
    let ready = (tiers.high.ready().await, tiers.low.ready().await);
    println!("without priorities: consumers (high, normal, low) {consumers:?}, still ready (high, low) {ready:?}");
    assert_eq!(consumers, (0, 1, 0), "only the queue itself is consumed");
    assert_eq!(ready, (1, 1), "the tiers' jobs wait");
    worker.stop().await;

    let worker = start(tiers.name(), 4, Some(Priorities::Strict), &starts);
    wait_until("the tiers' jobs ran", Duration::from_secs(20), || async {
        tiers.high.ready().await == 0 && tiers.low.ready().await == 0
    })
    .await;
    let consumers = (tiers.high.consumers().await, tiers.normal.consumers().await, tiers.low.consumers().await);
    println!("with priorities: consumers (high, normal, low) {consumers:?}");
    assert_eq!(consumers, (1, 1, 1), "each tier is consumed");
    worker.stop().await;
    client.close().await.expect("closed");
}

#[test]
fn a_bad_priorities_setting_is_named_and_the_worker_exits_2() {
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let mut command = std::process::Command::new(worker_binary());
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("LEPUS_")) {
            command.env_remove(name);
        }
        // The broker URL points nowhere: the check comes before any connection.
        command.env("LEPUS_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f");
        command.envs(env.iter().copied()).args(args).output().expect("runs")
    };
    for (bad, why) in
        [("weighted:6,0,1", "weighted:H,N,L"), ("weighted:6,3", "weighted:H,N,L"), ("fast", "is not `strict`")]
    {
        let output = run(&[], &["--priorities", bad]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains(&format!("priorities: `{bad}`")) && stderr.contains(why), "{bad}: {stderr}");
    }
    let output = run(&[("LEPUS_PRIORITIES", "weighted:6,3,1")], &["--print-config"]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(shown.lines().any(|line| line == r#"priorities = "weighted:6,3,1""#), "{shown}");
}

#[tokio::test]
async fn a_stop_hands_back_every_held_delivery_of_every_tier() {
    const EACH: usize = 40;
    let tiers = Tiers::declare("prio-stop").await;
    let client = connect().await;
    for tier in Priority::ALL {
        enqueue_many(&client, tiers.name(), tier, EACH, 100).await;
    }
    let starts = Starts::default();
    let worker = start(tiers.name(), 2, Some(Priorities::Weighted([1, 1, 1])), &starts);
    wait_until("a few jobs started", Duration::from_secs(30), || async { starts.list().len() >= 4 }).await;
    worker.stop().await;

    // Every job started ran to its end in the grace period; every other one is back in its tier.
    let started = starts.list().len();
    let ready = tiers.high.ready().await + tiers.normal.ready().await + tiers.low.ready().await;
    println!("stopped after {started} starts; {ready} of {} jobs ready again in the tiers", 3 * EACH);
    assert_eq!(ready as usize + started, 3 * EACH, "nothing lost, nothing left unacked");
    let consumers = tiers.high.consumers().await + tiers.normal.consumers().await + tiers.low.consumers().await;
    assert_eq!(consumers, 0);
    client.close().await.expect("closed");
}

/// The consumers of each tier (high, normal, low), as the broker counts them.
async fn consumers(tiers: &Tiers) -> (u32, u32, u32) {
    (tiers.high.consumers().await, tiers.normal.consumers().await, tiers.low.consumers().await)
}

#[tokio::test]
async fn remote_control_adds_and_cancels_a_queue_with_its_tiers() {
    use lepus::control::{Mailbox, Nodes};
    let (first, second) = (Tiers::declare("prio-rc-first").await, Tiers::declare("prio-rc-added").await);
    let node = format!("{}@lepus-tests", unique_name("prio-rc"));
    let starts = Starts::default();
    let config = WorkerConfig::default().queues([first.name()]).concurrency(2).name(node.clone());
    let worker = start_with(config, Some(Priorities::Strict), &starts);
    first.low.wait_for_consumers(1).await;
    let mut mailbox = Mailbox::open(first.normal.broker()).await.expect("a mailbox");
    let mut ask = async |method: &str, queue: &str| {
        let mut args = serde_json::Map::new();
        args.insert("queue".into(), serde_json::json!(queue));
        let nodes = [node.clone()];
        let replies = mailbox.call(method, args, Nodes::Named(&nodes), Duration::from_secs(5), Some(1)).await;
        replies.expect("the broker answers").into_iter().map(|(_, reply)| reply).next().unwrap_or_default()
    };

    let added = ask("add_consumer", second.name()).await;
    assert_eq!(added["ok"], format!("add consumer {}", second.name()), "{added}");
    second.low.wait_for_consumers(1).await;
    let client = connect().await;
    client
        .enqueue(Request::new(Tiered { tier: Priority::High, millis: 1 }).queue(second.name()).priority(Priority::High))
        .await
        .expect("enqueued");
    wait_until("the added queue's high job ran", Duration::from_secs(20), || async { !starts.list().is_empty() }).await;

    let cancelled = ask("cancel_consumer", first.name()).await;
    assert!(cancelled["ok"].is_string(), "{cancelled}");
    wait_until("the first queue's tiers have no consumer", Duration::from_secs(20), || async {
        consumers(&first).await == (0, 0, 0)
    })
    .await;
    let (first_now, second_now) = (consumers(&first).await, consumers(&second).await);
    println!(
        "after add_consumer and cancel_consumer: consumers of the first queue's tiers {first_now:?}, of the added one's {second_now:?}"
    );
    assert_eq!(second_now, (1, 1, 1), "the added queue is consumed with its tiers");
    mailbox.close().await;
    worker.stop().await;
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_celery_client_reaches_a_tier_by_its_queue_name() {
    let tiers = Tiers::declare("prio-celery").await;
    let config = WorkerConfig::default().amqp_url(amqp_url()).queues([tiers.name()]).priorities(Priorities::Strict);
    let worker = lepus_demo::jobs::register(Worker::new(config));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async { drop(stopped.await) }));
    tiers.low.wait_for_consumers(1).await;

    // send_task("demo.add", queue="<q>.high"), as apply_async(queue=…) sends it.
    let results = lepus_tests::run_python_with("send_adds.py", tiers.high.name(), &[("LEPUS_TEST_JOBS", "5")]).await;
    let values: Vec<i64> =
        results[0].as_array().expect("results").iter().map(|r| r["value"].as_i64().expect("a sum")).collect();
    println!("results of demo.add sent by Celery to {}: {values:?}", tiers.high.name());
    assert_eq!(values, [0, 2, 4, 6, 8]);
    assert_eq!(tiers.high.ready().await, 0);
    stop.send(()).expect("the worker runs");
    running.await.expect("joined").expect("the worker stopped cleanly");
}

#[tokio::test]
async fn after_a_cut_connection_the_tiers_are_consumed_again_and_every_job_runs() {
    const EACH: usize = 20;
    let tiers = Tiers::declare("prio-cut").await;
    let client = connect().await;
    for tier in Priority::ALL {
        enqueue_many(&client, tiers.name(), tier, EACH, 30).await;
    }
    let starts = Starts::default();
    let worker = start(tiers.name(), 2, Some(Priorities::Strict), &starts);
    wait_until("a few jobs started", Duration::from_secs(30), || async { starts.list().len() >= 4 }).await;
    // This test's process holds this one worker connection (its client's is named otherwise).
    let cut = lepus_tests::cut_connections(&format!("lepus-worker {}", lepus::internal::node_name()));
    assert_eq!(cut, 1, "the worker's connection was cut");
    wait_until("every tier is consumed again and every job has started", Duration::from_secs(60), || async {
        consumers(&tiers).await == (1, 1, 1) && starts.distinct() == 3 * EACH
    })
    .await;
    worker.stop().await;
    let ready = tiers.high.ready().await + tiers.normal.ready().await + tiers.low.ready().await;
    let started = starts.list().len();
    println!(
        "cut after 4+ starts: {started} starts of {} distinct jobs for {} sent (jobs running at the cut run again); {ready} left",
        starts.distinct(),
        3 * EACH
    );
    assert_eq!(ready, 0, "nothing came back after the stop: every job was acked");
    assert!(started >= 3 * EACH, "every job ran: {started} starts");
    client.close().await.expect("closed");
}
