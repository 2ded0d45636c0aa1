//! Unique jobs (`Request::unique`, `Job::unique`): while a job with a key is queued or running
//! (or for at most its ttl), enqueueing the key again enqueues nothing and answers the holder's
//! id (or `Error::Duplicate`). The lock is a message in `lepus.unique.<key>`; a worker releases
//! it when the job ends for good, and only if it is still its own. The workers run in this test
//! process, with a handler that records what it ran.

use lepus::internal::topology::{unique_holder_queue, unique_lock_queue};
use lepus::{Error, Job, JobId, Request, RetryPolicy, Unique};
use lepus_tests::{Cleanup, TestQueue, amqp_url, connect, unique_name, wait_until};
use lepus_worker::{JobContext, JobError, State, Worker, WorkerConfig};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

const TIMEOUT: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(60);

/// A job that sleeps, may fail its first attempts, and is unique by `key` when the job type says.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Work {
    /// Unique by this key (ttl 60 s) by the job type's own rule, if set.
    typed_key: Option<String>,
    sleep_ms: u64,
    /// Fails the first this many attempts.
    fail_first: u32,
}

impl Job for Work {
    const NAME: &'static str = "unique.work";
    type Output = u32;

    fn unique(&self) -> Option<Unique> {
        self.typed_key.as_ref().map(|key| Unique::new(key.clone(), LONG))
    }
}

/// What the handler saw: each run's job id when it started and when it ended.
#[derive(Debug, Clone, Default)]
struct Runs {
    started: Arc<Mutex<Vec<JobId>>>,
    ended: Arc<Mutex<Vec<JobId>>>,
}

impl Runs {
    fn started(&self) -> Vec<JobId> {
        self.started.lock().expect("lock").clone()
    }
    fn ended(&self) -> Vec<JobId> {
        self.ended.lock().expect("lock").clone()
    }
}

async fn work(job: Work, ctx: JobContext, State(runs): State<Runs>) -> Result<u32, JobError> {
    runs.started.lock().expect("lock").push(ctx.id().clone());
    tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
    runs.ended.lock().expect("lock").push(ctx.id().clone());
    if ctx.attempt() <= job.fail_first {
        return Err(JobError::new(format!("attempt {} fails on purpose", ctx.attempt())));
    }
    Ok(ctx.attempt())
}

/// A worker in this process on `queue`, stopped by [`Running::stop`].
struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), lepus_worker::WorkerError>>,
}

impl Running {
    async fn start(queue: &TestQueue, runs: &Runs, concurrency: u16) -> Self {
        let config = WorkerConfig::default().amqp_url(amqp_url()).queues([queue.name()]).concurrency(concurrency);
        let worker = Worker::new(config).state(runs.clone()).register(work);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker.run(async { drop(stopped.await) }));
        queue.wait_for_consumers(1).await;
        Self { stop, task }
    }

    async fn stop(self) {
        self.stop.send(()).expect("the worker runs");
        self.task.await.expect("joined").expect("the worker stopped cleanly");
    }
}

/// A key of this test's own, whose lock queue is deleted at the end of the test.
fn key(cleanup: &mut Cleanup, what: &str) -> String {
    let key = unique_name(what);
    cleanup.queue(unique_lock_queue(&key));
    cleanup.queue(unique_holder_queue(&key));
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_clients_enqueueing_one_key_at_once_make_one_job() {
    let queue = TestQueue::declare("unique-ten").await;
    let mut cleanup = Cleanup::default();
    let runs = Runs::default();
    let worker = Running::start(&queue, &runs, 4).await;
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(connect().await);
    }
    let rounds = 20;
    let mut winners = HashSet::new();
    for round in 0..rounds {
        // The job type's own rule (`Job::unique`) makes it unique by its key.
        let job = Work { typed_key: Some(key(&mut cleanup, &format!("ten-{round}"))), sleep_ms: 500, fail_first: 0 };
        let start = Arc::new(tokio::sync::Barrier::new(clients.len()));
        let mut sending = tokio::task::JoinSet::new();
        for client in &clients {
            let (client, job, start, queue) =
                (client.clone(), job.clone(), Arc::clone(&start), queue.name().to_owned());
            sending.spawn(async move {
                start.wait().await;
                client.enqueue(Request::new(job).queue(queue)).await
            });
        }
        let ids: Vec<JobId> = sending.join_all().await.into_iter().map(|id| id.expect("enqueued")).collect();
        let distinct: HashSet<&JobId> = ids.iter().collect();
        println!("round {round}: 10 enqueues answered {} distinct id(s)", distinct.len());
        assert_eq!(distinct.len(), 1, "all ten clients get the same id: {ids:?}");
        winners.insert(ids[0].clone());
    }
    wait_until("every round's job has ended", TIMEOUT, || async { runs.ended().len() >= rounds }).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // a duplicate would have run by now
    let started = runs.started();
    println!("jobs run: {} for {rounds} rounds of 10 enqueues", started.len());
    assert_eq!(started.len(), rounds, "one job per key: {started:?}");
    assert_eq!(started.iter().cloned().collect::<HashSet<_>>(), winners, "the job that ran is the one answered");
    assert_eq!(queue.ready().await, 0);
    for client in &clients {
        client.close().await.expect("closed");
    }
    worker.stop().await;
}

#[tokio::test]
async fn a_key_takes_a_new_job_once_its_job_has_ended_for_good() {
    let queue = TestQueue::declare("unique-again").await;
    let mut cleanup = Cleanup::default();
    let runs = Runs::default();
    let worker = Running::start(&queue, &runs, 2).await;
    let client = connect().await;
    let key = key(&mut cleanup, "again");
    let request = |fail_first| Request::new(Work { fail_first, ..Work::default() }).queue(queue.name());

    // Succeeded: the caller that has the result can enqueue the key again at once.
    let first = client.submit(request(0).unique(&key, LONG)).await.expect("submitted");
    let first_id = first.id().clone();
    assert_eq!(first.output(TIMEOUT).await.expect("done"), 1);
    // Failed for good (no retry): the key is free too.
    let second = client.submit(request(1).unique(&key, LONG)).await.expect("submitted after the first ended");
    let second_id = second.id().clone();
    assert!(matches!(second.output(TIMEOUT).await, Err(Error::JobFailed { .. })));
    let third = client.enqueue(request(0).unique(&key, LONG)).await.expect("enqueued after the failure");
    wait_until("the third job has ended", TIMEOUT, || async { runs.ended().len() == 3 }).await;
    let started = runs.started();
    println!("three jobs in turn on one key: {started:?}");
    assert_eq!(started, [first_id, second_id, third]);
    client.close().await.expect("closed");
    worker.stop().await;
}

#[tokio::test]
async fn a_duplicate_gets_the_holders_id_until_the_ttl_runs_out() {
    let queue = TestQueue::declare("unique-ttl").await; // no worker: the jobs stay queued
    let mut cleanup = Cleanup::default();
    let client = connect().await;
    let key = key(&mut cleanup, "ttl");
    let request = || Request::new(Work::default()).queue(queue.name()).unique(&key, Duration::from_secs(1));
    let first = client.enqueue(request()).await.expect("enqueued");
    let again = client.enqueue(request()).await.expect("answered");
    assert_eq!(again, first, "the key is held: the holder's id");
    assert_eq!(queue.ready().await, 1, "nothing more enqueued");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = client.enqueue(request()).await.expect("enqueued");
    assert_ne!(after, first, "the lock lapsed after its ttl of 1 s: a new job");
    assert_eq!(queue.ready().await, 2);
    client.close().await.expect("closed");
}

#[tokio::test]
async fn the_error_option_names_the_job_that_holds_the_key() {
    let queue = TestQueue::declare("unique-error").await;
    let mut cleanup = Cleanup::default();
    let client = connect().await;
    let key = key(&mut cleanup, "error");
    let request = || Request::new(Work::default()).queue(queue.name());
    let holder = client.enqueue(request().unique(&key, LONG)).await.expect("enqueued");
    match client.enqueue(request().unique_or_error(&key, LONG)).await {
        Err(Error::Duplicate { key: named, existing }) => assert_eq!((named, existing), (key.clone(), holder.clone())),
        other => panic!("expected Error::Duplicate, got {other:?}"),
    }
    // `submit` cannot hand out the holder's result (it goes to its own sender): an error too.
    match client.submit(request().unique(&key, LONG)).await {
        Err(Error::Duplicate { existing, .. }) => assert_eq!(existing, holder),
        other => panic!("expected Error::Duplicate from submit, got {other:?}"),
    }
    assert_eq!(queue.ready().await, 1, "only the holder is queued");
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_worker_releases_its_own_lock_only() {
    let queue = TestQueue::declare("unique-own").await;
    let mut cleanup = Cleanup::default();
    let client = connect().await;
    let key = key(&mut cleanup, "own");
    let request = |sleep_ms| Request::new(Work { sleep_ms, ..Work::default() }).queue(queue.name());
    // A's lock lapses while A is still queued; B takes the key.
    let a = client.enqueue(request(0).unique(&key, Duration::from_secs(1))).await.expect("enqueued");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b = client.enqueue(request(3000).unique(&key, LONG)).await.expect("enqueued");
    assert_ne!(a, b);
    let runs = Runs::default();
    let worker = Running::start(&queue, &runs, 2).await;
    wait_until("A has ended", TIMEOUT, || async { runs.ended().contains(&a) }).await;
    assert!(!runs.ended().contains(&b), "B still runs (3 s)");
    // A's end left B's lock alone.
    let c = client.enqueue(request(0).unique(&key, LONG)).await.expect("answered");
    assert_eq!(c, b, "B still holds the key after A ended");
    wait_until("B has ended", TIMEOUT, || async { runs.ended().contains(&b) }).await;
    let d = client.enqueue(request(0).unique(&key, LONG)).await.expect("enqueued");
    assert!(d != a && d != b, "B's end released its lock: a new job");
    wait_until("D has ended", TIMEOUT, || async { runs.ended().contains(&d) }).await;
    assert_eq!(runs.started().len(), 3, "A, B and D ran: {:?}", runs.started());
    client.close().await.expect("closed");
    worker.stop().await;
}

#[tokio::test]
async fn a_retry_keeps_the_lock() {
    let queue = TestQueue::declare("unique-retry").await;
    let mut cleanup = Cleanup::default();
    let runs = Runs::default();
    let worker = Running::start(&queue, &runs, 2).await;
    let client = connect().await;
    let key = key(&mut cleanup, "retry");
    let policy = RetryPolicy::attempts(2).backoff(Duration::from_secs(2), 1.0, Duration::from_secs(2));
    let request = || Request::new(Work { fail_first: 1, ..Work::default() }).queue(queue.name()).retry(policy);
    let first = client.enqueue(request().unique(&key, LONG)).await.expect("enqueued");
    wait_until("the first attempt has failed", TIMEOUT, || async { runs.ended().len() == 1 }).await;
    // The job waits 2 s in the delay cascade for its retry: it still holds the key.
    let again = client.enqueue(request().unique(&key, LONG)).await.expect("answered");
    assert_eq!(again, first, "the retrying job holds the key");
    wait_until("the retry has ended", TIMEOUT, || async { runs.ended().len() == 2 }).await;
    let started = runs.started();
    assert_eq!(started, [first.clone(), first.clone()], "the same job, twice, nothing else");
    wait_until("the key is free again", TIMEOUT, || async {
        client.enqueue(request().unique(&key, LONG)).await.expect("enqueued") != first
    })
    .await;
    client.close().await.expect("closed");
    worker.stop().await;
}

#[tokio::test]
async fn a_unique_job_cannot_go_in_bulk_and_a_bad_key_is_refused() {
    let queue = TestQueue::declare("unique-bulk").await;
    let client = connect().await;
    let key = unique_name("bulk");
    let sent =
        client.enqueue_many((0..3).map(|_| Request::new(Work::default()).queue(queue.name()).unique(&key, LONG))).await;
    assert_eq!(sent.len(), 3);
    for result in &sent {
        assert!(matches!(result, Err(Error::UniqueLock { key: named, .. }) if *named == key), "{result:?}");
    }
    let bad = client.enqueue(Request::new(Work::default()).queue(queue.name()).unique("has space", LONG)).await;
    assert!(matches!(bad, Err(Error::InvalidName { kind: "unique key", .. })), "{bad:?}");
    assert_eq!(queue.ready().await, 0, "nothing sent");
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_malformed_key_header_does_not_stop_the_job() {
    let queue = TestQueue::declare("unique-malformed").await;
    let runs = Runs::default();
    let worker = Running::start(&queue, &runs, 1).await;
    let (_, mut message) =
        Request::new(Work::default()).queue(queue.name()).into_message(chrono::Utc::now()).expect("message");
    message
        .extra_headers
        .insert(lepus::internal::UNIQUE_KEY_HEADER.into(), lepus::lapin::types::AMQPValue::LongLongInt(42));
    queue.publish(&message).await;
    wait_until("the job has run", TIMEOUT, || async { runs.ended().len() == 1 }).await;
    assert_eq!(runs.started(), [message.id.clone()]);
    wait_until("the job is acked", TIMEOUT, || async { queue.ready().await == 0 && queue.unacked() == 0 }).await;
    assert_eq!(queue.ready_in(&queue.dead_letter_queue()).await, 0, "not dead-lettered");
    worker.stop().await;
}

#[tokio::test]
async fn a_python_client_following_the_protocol_shares_the_key_with_rust() {
    let queue = TestQueue::declare("unique-python").await;
    let mut cleanup = Cleanup::default();
    let client = connect().await;
    let key = key(&mut cleanup, "python");
    let env = [("LEPUS_UNIQUE_KEY", key.as_str()), ("LEPUS_TEST_JOBS", "3")];
    // No worker yet: Python's first enqueue takes the key, its next two get the holder's id.
    let lines = lepus_tests::run_python_with("unique_enqueue.py", queue.name(), &env).await;
    println!("python: {lines:?}");
    assert_eq!(lines.len(), 3);
    let holder = lines[0]["id"].as_str().expect("an id").to_owned();
    assert_eq!(lines.iter().map(|l| l["sent"].as_bool()).collect::<Vec<_>>(), [Some(true), Some(false), Some(false)]);
    assert!(lines.iter().all(|l| l["id"] == holder.as_str()), "{lines:?}");
    // A Rust client sees Python's job as the holder.
    let rust =
        client.enqueue(Request::new(Work::default()).queue(queue.name()).unique(&key, LONG)).await.expect("answered");
    assert_eq!(rust.as_str(), holder);
    assert_eq!(queue.ready().await, 1, "one job queued");
    // A Lepus worker runs it and releases the lock Python took.
    let runs = Runs::default();
    let worker = Running::start(&queue, &runs, 1).await;
    wait_until("Python's job has ended", TIMEOUT, || async { runs.ended().len() == 1 }).await;
    assert_eq!(runs.started().iter().map(JobId::as_str).collect::<Vec<_>>(), [holder.as_str()]);
    let again = lepus_tests::run_python_with("unique_enqueue.py", queue.name(), &env[..1]).await;
    assert_eq!(again[0]["sent"].as_bool(), Some(true), "the key is free once the job ended: {again:?}");
    wait_until("the second job has ended", TIMEOUT, || async { runs.ended().len() == 2 }).await;
    client.close().await.expect("closed");
    worker.stop().await;
}

#[tokio::test]
async fn a_job_that_cannot_be_sent_gives_its_key_back() {
    let queue = TestQueue::declare("unique-unsent").await;
    let mut cleanup = Cleanup::default();
    let client = connect().await;
    let key = key(&mut cleanup, "unsent");
    let missing = unique_name("missing");
    let request = |to: &str| Request::new(Work::default()).queue(to.to_owned()).unique(&key, LONG);
    // The lock is taken, then the job is returned unroutable: the lock is removed again.
    let unsent = client.enqueue(request(&missing)).await;
    assert!(matches!(&unsent, Err(Error::Unroutable { routing_key, .. }) if *routing_key == missing), "{unsent:?}");
    let sent = client.enqueue(request(queue.name())).await.expect("the key is free: enqueued");
    let again = client.enqueue(request(queue.name())).await.expect("answered");
    assert_eq!(again, sent, "and now held by the job that was sent");
    assert_eq!(queue.ready().await, 1);
    client.close().await.expect("closed");
}
