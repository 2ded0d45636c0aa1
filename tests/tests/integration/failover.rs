//! Failover on a three-node cluster of each test's own ([`Cluster`], started by
//! `deploy/cluster/cluster`): nodes are lost (`rabbitmqctl stop_app`) while workers run jobs,
//! scheduler replicas fire a schedule, delayed jobs wait in the cascade and a client enqueues.
//! Every process is put on a node of its choosing (`LEPUS_AMQP_URL_ORDER=listed`, its node
//! first) and fails over to the next. These tests run alone (the `failover` group in
//! `.config/nextest.toml`): three more nodes take the machine's two cores, and the timings
//! asserted here would not hold beside other tests.

use chrono::{DateTime, Utc};
use futures_lite::StreamExt;
use lepus::internal::topology::{self, inspect_queue};
use lepus::lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lepus::lapin::types::FieldTable;
use lepus::protocol::TaskMessage;
use lepus::{Broker, Client, ClientOptions, Request, WorkQueue};
use lepus_tests::{
    Cluster, Flaky, Process, Tick, scheduler_binary, start_worker_with_env, temp_file, unique_name, wait_until,
};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);

/// How long a job of the 10,000 may take to get its result: a few jobs wait behind the cuts, none
/// near this; short enough for the test to report a lost result before nextest stops it.
const RESULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Jobs each worker runs at once, which is also its prefetch.
const CONCURRENCY: usize = 8;

/// A worker on `queue`, connected to node `n` of `cluster` first.
fn worker(cluster: &Cluster, queue: &str, n: usize) -> Process {
    let env = cluster.env(n);
    let env: Vec<(&str, &str)> = env.iter().map(|(key, value)| (*key, value.as_str())).collect();
    start_worker_with_env(queue, &["--concurrency", &CONCURRENCY.to_string()], &env)
}

/// A client on node `n` of `cluster` (one connection, failing over to the next node).
async fn client(cluster: &Cluster, n: usize, options: ClientOptions) -> Client {
    Client::with_broker(cluster.broker(n).await, options.reply_queue_expires(Duration::from_secs(600)))
}

async fn declare(broker: &Broker, queue: &WorkQueue) {
    let channel = broker.channel().await.expect("channel");
    queue.declare(&channel).await.expect("declared");
    drop(channel.close(200, "declared".into()).await);
}

/// Polls `check` every 100 ms until it holds; panics after `timeout`, naming `what`.
fn wait_blocking(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops node `lost` and returns how long after the stop began the workers of `queue` all
/// consumed again, each on a node still running (asked of node `via`).
fn lose_node(cluster: &Cluster, lost: usize, queue: &str, via: usize, workers: usize) -> (Duration, Duration) {
    let started = Instant::now();
    cluster.stop(lost);
    let stopped = started.elapsed();
    wait_blocking(&format!("{workers} consumers off node {lost}"), TIMEOUT, || {
        let nodes = cluster.consumer_nodes(queue, via);
        nodes.len() == workers && !nodes.contains(&lost)
    });
    (stopped, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_get_their_results_through_the_loss_of_the_leaders_node_and_then_another() {
    const JOBS: usize = 10_000;
    const WORKERS: usize = 3;
    const SUBMITS: usize = 64;
    let cluster = Arc::new(Cluster::up());
    let queue = WorkQueue::new(unique_name("failover")).expect("valid name");
    declare(&cluster.broker(0).await, &queue).await;
    let cascades = [topology::delay_queue(0, 1), "celery_delayed_0".to_owned()];
    for name in [queue.name().to_owned(), queue.dead_letter_queue()].into_iter().chain(cascades) {
        assert_eq!(cluster.members_of(&name, 0).len(), 3, "{name}: a member on each node");
    }
    let first_leader = cluster.leader_of(queue.name(), 0);
    let runs = temp_file("runs");
    let _workers: Vec<Process> = (0..WORKERS).map(|n| worker(&cluster, queue.name(), n)).collect();
    wait_until("each worker consumes from its own node", TIMEOUT, || async {
        cluster.consumer_nodes(queue.name(), 2) == [0, 1, 2]
    })
    .await;
    // The client starts on the first node lost and fails over to the next, the second lost: its
    // reply queue (replicated, as it was given the three nodes) keeps the results meanwhile.
    let second_loss = (first_leader + 1) % 3;
    let via = (first_leader + 2) % 3;
    let client = client(&cluster, first_leader, ClientOptions::default()).await;

    let done = Arc::new(AtomicUsize::new(0));
    let cuts = {
        let (cluster, done, name) = (Arc::clone(&cluster), Arc::clone(&done), queue.name().to_owned());
        tokio::task::spawn_blocking(move || {
            let at = |count: usize| {
                wait_blocking(&format!("{count} results"), Duration::from_secs(180), || {
                    done.load(Ordering::Relaxed) >= count
                });
            };
            at(JOBS / 6);
            let first = (done.load(Ordering::Relaxed), lose_node(&cluster, first_leader, &name, via, WORKERS));
            cluster.start(first_leader);
            at(JOBS / 2);
            let second = (done.load(Ordering::Relaxed), lose_node(&cluster, second_loss, &name, via, WORKERS));
            [first, second]
        })
    };

    let submitting = Arc::new(tokio::sync::Semaphore::new(SUBMITS));
    let mut results = tokio::task::JoinSet::new();
    for _ in 0..JOBS {
        let permit = Arc::clone(&submitting).acquire_owned().await.expect("semaphore open");
        let request = Request::new(Tick { path: runs.clone(), sleep_ms: 40 }).queue(queue.name());
        let (client, done) = (client.clone(), Arc::clone(&done));
        results.spawn(async move {
            let submitted = client.submit(request).await;
            drop(permit);
            let output = match submitted {
                Ok(pending) => {
                    let id = pending.id().to_string();
                    pending.output(RESULT_TIMEOUT).await.map_err(|e| (Some(id), e))
                }
                Err(e) => Err((None, e)),
            };
            done.fetch_add(1, Ordering::Relaxed);
            output
        });
    }
    let mut lost = Vec::new();
    while let Some(result) = results.join_next().await {
        if let Err((id, e)) = result.expect("the task ran") {
            lost.push((id, e.to_string()));
        }
    }
    let cuts = cuts.await.expect("the nodes were lost and regained");

    let recorded = Tick::ids(&runs);
    let once: HashSet<&String> = recorded.iter().collect();
    let duplicates = recorded.len() - once.len();
    let dead_lettered = inspect_queue(client.broker(), &queue.dead_letter_queue())
        .await
        .expect("the broker answers")
        .expect("the dead-letter queue exists")
        .messages;
    let [(done_first, (stopped_first, consumed_first)), (done_second, (stopped_second, consumed_second))] = cuts;
    println!(
        "{JOBS} jobs: {} results, {} lost, {dead_lettered} dead-lettered, {duplicates} run twice; after {done_first} \
         results node {first_leader} (the leader) stopped in {stopped_first:?}, all {WORKERS} workers consumed again \
         {consumed_first:?} after the stop began; after {done_second} results node {second_loss} stopped in \
         {stopped_second:?}, consumed again after {consumed_second:?}",
        JOBS - lost.len(),
        lost.len(),
    );
    assert!(done_second < JOBS, "the second node was lost only after the last result");
    if !lost.is_empty() {
        let ran = lost.iter().filter(|(id, _)| id.as_ref().is_some_and(|id| once.contains(&id))).count();
        let replies = cluster.ctl(
            via,
            &[
                "list_queues",
                "-q",
                "--no-table-headers",
                "name",
                "type",
                "messages_ready",
                "messages_unacknowledged",
                "consumers",
                "leader",
            ],
        );
        let replies: Vec<&str> = replies.lines().filter(|line| line.starts_with("lepus.reply.")).collect();
        println!("{} lost, of which {ran} ran; the reply queue: {replies:?}", lost.len());
    }
    assert!(lost.is_empty(), "{} jobs got no result, first: {:?}", lost.len(), lost.first());
    assert_eq!(dead_lettered, 0, "no job is dead-lettered");
    assert_eq!(once.len(), JOBS, "every job ran");
    // At each of the two cuts at most prefetch x workers jobs were in flight in the workers, and
    // SUBMITS publishes in the client (one whose connection was lost is sent again).
    let in_flight = 2 * (CONCURRENCY * WORKERS + SUBMITS);
    assert!(duplicates <= in_flight, "{duplicates} jobs ran twice: more than the {in_flight} in flight at the cuts");
    for (stopped, consumed) in [(stopped_first, consumed_first), (stopped_second, consumed_second)] {
        assert!(consumed <= stopped + Duration::from_secs(5), "took {consumed:?} to consume again");
    }
    let queues = cluster.ctl(via, &["list_queues", "-q", "--no-table-headers", "name"]);
    let replies = queues.lines().find(|name| name.starts_with("lepus.reply.")).expect("the client's reply queue");
    assert_eq!(cluster.members_of(replies, via).len(), 3, "the reply queue of a client of three nodes is on each");
    client.close().await.expect("closed");
}

/// A schedule file with a schedule firing `test.tick` every second (misfire `all`) to `queue`.
fn every_second(queue: &str, ticks: &str) -> String {
    let path = temp_file("schedules");
    let text = format!(
        "[[schedule]]\nname = \"pulse\"\ncron = \"* * * * * *\"\njob = \"test.tick\"\nqueue = \"{queue}\"\nmisfire = \"all\"\nkwargs = {{ path = \"{ticks}\" }}\n"
    );
    std::fs::write(&path, text).expect("schedule file written");
    path
}

/// The tick time in a firing id `<schedule>@<time>`.
fn tick_of(id: &str) -> DateTime<Utc> {
    let (_, time) = id.rsplit_once('@').expect("a firing id");
    DateTime::parse_from_rfc3339(time).expect("an RFC 3339 time").with_timezone(&Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_scheduler_leads_within_two_heartbeats_of_the_leaders_node_loss_and_each_tick_runs_once() {
    const HEARTBEAT: Duration = Duration::from_secs(2);
    let cluster = Cluster::up();
    let queue = WorkQueue::new(unique_name("ticks")).expect("valid name");
    let broker = cluster.broker(2).await;
    declare(&broker, &queue).await;
    let _worker = worker(&cluster, queue.name(), 2);
    let ticks = temp_file("ticks");
    let schedules = every_second(queue.name(), &ticks);
    let group = unique_name("group");
    let mut replicas: Vec<Process> = (0..2)
        .map(|n| {
            let mut command = Command::new(scheduler_binary());
            command.args(["run", "--schedules", &schedules, "--group", &group, "--heartbeat", "2s"]);
            command.envs(cluster.env(n));
            lepus_tests::spawn(command, "scheduler")
        })
        .collect();
    let leader = async |replicas: &[Process]| {
        let leader = lepus_scheduler::leader(&broker, &group).await.ok().flatten()?;
        replicas.iter().position(|replica| lepus_tests::node_name(replica) == leader.node)
    };
    wait_until("three ticks", TIMEOUT, || async { Tick::ids(&ticks).len() >= 3 }).await;
    let first = leader(&replicas).await.expect("a replica leads");

    let started = Instant::now();
    cluster.stop(first);
    let stopped = started.elapsed();
    while leader(&replicas).await != Some(1 - first) {
        let logs = || replicas.iter().map(|r| r.log_tail(15)).collect::<Vec<_>>().join("\n  --\n");
        assert!(started.elapsed() < TIMEOUT, "the other replica did not lead within {TIMEOUT:?}; logs:\n{}", logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let handover = started.elapsed();
    let before = Tick::ids(&ticks).len();
    wait_until("five more ticks", TIMEOUT, || async { Tick::ids(&ticks).len() >= before + 5 }).await;
    for replica in &mut replicas {
        replica.terminate().expect("SIGTERM sent");
        assert!(replica.wait_exit(TIMEOUT).await.is_some(), "{}", replica.log());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let ids = Tick::ids(&ticks);
    let unique: BTreeSet<&String> = ids.iter().collect();
    let times: BTreeSet<DateTime<Utc>> = ids.iter().map(|id| tick_of(id)).collect();
    let (earliest, latest) = (times.first().copied().expect("ticks"), times.last().copied().expect("ticks"));
    let expected = usize::try_from((latest - earliest).num_seconds() + 1).expect("positive");
    println!(
        "replica {first}'s node stopped in {stopped:?}; replica {} led {handover:?} after the stop began; {} ticks \
         from {earliest} to {latest}, {} doubled, {} missing",
        1 - first,
        ids.len(),
        ids.len() - unique.len(),
        expected - times.len()
    );
    assert_eq!(unique.len(), ids.len(), "a tick ran twice: {ids:?}");
    assert_eq!(times.len(), expected, "a tick is missing: {ids:?}");
    assert!(handover <= stopped + 2 * HEARTBEAT, "the other replica led only {handover:?} after the stop began");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_delayed_across_a_node_loss_run_once_each_on_time() {
    let cluster = Cluster::up();
    let queue = WorkQueue::new(unique_name("delayed")).expect("valid name");
    // Declared through node 0, as are the cascade's queues: their leaders are on the node lost.
    declare(&cluster.broker(0).await, &queue).await;
    // Delays of 2 to 7 s are 16 to 56 ticks: one wait each, in level 1 of the cascade.
    for digit in 2..=7 {
        let level = topology::delay_queue(1, digit);
        assert_eq!(cluster.leader_of(&level, 0), 0, "{level} is led from node 0");
    }
    let _worker = worker(&cluster, queue.name(), 2);
    let client = client(&cluster, 1, ClientOptions::default()).await;

    let mut sent = Vec::new();
    for seconds in [2, 3, 3, 4, 5, 5, 6, 7] {
        let record = temp_file("delayed-runs");
        let request = Request::new(Flaky { record: record.clone(), ..Flaky::default() })
            .queue(queue.name())
            .delay(Duration::from_secs(seconds));
        let at = Utc::now();
        sent.push((seconds, at, record, client.submit(request).await.expect("submitted")));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    cluster.stop(0);
    let stopped = started.elapsed();

    let mut lateness = Vec::new();
    for (seconds, at, record, pending) in sent {
        pending.output(TIMEOUT).await.expect("the job ran");
        let runs = Flaky::runs(&record);
        assert_eq!(runs.len(), 1, "the {seconds} s job ran {} times", runs.len());
        let due = at.timestamp_millis() + i64::try_from(seconds * 1000).expect("small");
        let late = i64::try_from(runs[0].at_ms).expect("a time") - due;
        lateness.push((seconds, late));
    }
    println!("node 0 stopped in {stopped:?}; lateness per delay (s, ms): {lateness:?}");
    for (seconds, late) in lateness {
        assert!(late >= 0, "the {seconds} s job ran {} ms early", -late);
        assert!(late <= 1500, "the {seconds} s job ran {late} ms late");
    }
    client.close().await.expect("closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_during_its_nodes_loss_returns_an_id_only_for_a_job_that_exists() {
    const ENQUEUERS: usize = 4;
    let cluster = Arc::new(Cluster::up());
    let queue = WorkQueue::new(unique_name("enqueue")).expect("valid name");
    let reader = cluster.broker(1).await;
    declare(&reader, &queue).await;
    let options = ClientOptions::default().broker_timeout(Duration::from_secs(5));
    let client = client(&cluster, 0, options).await;

    let stop = Arc::new(AtomicBool::new(false));
    let cut = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mut enqueuers = tokio::task::JoinSet::new();
    for _ in 0..ENQUEUERS {
        let (client, stop, name) = (client.clone(), Arc::clone(&stop), queue.name().to_owned());
        enqueuers.spawn(async move {
            let (mut ids, mut errors) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let request = Request::new(Tick { path: String::new(), sleep_ms: 0 }).queue(&name);
                match client.enqueue(request).await {
                    Ok(id) => ids.push((Instant::now(), id.to_string())),
                    Err(e) => errors.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ids, errors)
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped = {
        let (cluster, cut) = (Arc::clone(&cluster), Arc::clone(&cut));
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            cluster.stop(0);
            *cut.lock().expect("not poisoned") = Some(Instant::now());
            started.elapsed()
        })
        .await
        .expect("node 0 stopped")
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ids, mut errors) = (Vec::new(), Vec::new());
    while let Some(done) = enqueuers.join_next().await {
        let (some_ids, some_errors) = done.expect("the enqueuer ran");
        ids.extend(some_ids);
        errors.extend(some_errors);
    }
    let cut = cut.lock().expect("not poisoned").expect("the cut happened");
    let after_cut = ids.iter().filter(|(at, _)| *at > cut).count();

    let (queued, messages) = ids_in(&reader, queue.name()).await;
    let missing: Vec<&String> = ids.iter().map(|(_, id)| id).filter(|id| !queued.contains(*id)).collect();
    let mut reasons: HashMap<&str, usize> = HashMap::new();
    for error in &errors {
        *reasons.entry(error.as_str()).or_default() += 1;
    }
    println!(
        "node 0 stopped in {stopped:?}; {} enqueues returned an id ({after_cut} after the stop), {} an error; {} \
         jobs in the queue ({messages} messages: a resent publish may be there twice), {} of them enqueued with an \
         error; errors: {reasons:?}",
        ids.len(),
        errors.len(),
        queued.len(),
        queued.len().saturating_sub(ids.len() - missing.len())
    );
    assert!(missing.is_empty(), "{} ids returned for jobs not in the queue: {missing:?}", missing.len());
    assert!(after_cut > 0, "the client enqueues again after losing its node");
    client.close().await.expect("closed");
}

/// The ids of the jobs in `queue`, all taken from it (a job there twice counts once), and how
/// many messages there were.
async fn ids_in(broker: &Broker, queue: &str) -> (HashSet<String>, u32) {
    let expected = inspect_queue(broker, queue).await.expect("the broker answers").expect("the queue exists").messages;
    let channel = broker.channel().await.expect("channel");
    channel.basic_qos(1000, BasicQosOptions::default()).await.expect("qos");
    let options = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
    let mut consumer =
        channel.basic_consume(queue.into(), "ids".into(), options, FieldTable::default()).await.expect("consume");
    // A publish whose connection was lost before its confirm is sent again: a job may be there
    // twice, so count messages, not ids.
    let mut ids = HashSet::new();
    for _ in 0..expected {
        let delivery = tokio::time::timeout(TIMEOUT, consumer.next())
            .await
            .expect("the queue's messages arrive")
            .expect("the consumer is open")
            .expect("a delivery");
        let message = TaskMessage::decode(&delivery.properties, &delivery.data).expect("a task message");
        ids.insert(message.id.to_string());
    }
    (ids, expected)
}
