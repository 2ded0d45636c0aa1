//! Rate limits across all workers: worker processes share one token bucket per rate key, filled
//! by one elected issuer. Starts are timestamped by the handlers (`test.flaky` appends the time it
//! started to a file that every worker shares). Timing-sensitive: these tests run alone (the
//! `rate-limits` override in `.config/nextest.toml`).

use lepus::internal::topology;
use lepus::protocol::TaskMessage;
use lepus::{Rate, Request, rate_issuer};
use lepus_tests::{Cleanup, Flaky, Process, Samples, TestQueue, connect, free_address, temp_file, unique_name};
use std::time::{Duration, Instant};

const RATE: u32 = 20;

/// A unique rate key, its three queues deleted at the end of the test.
fn rate_key(cleanup: &mut Cleanup) -> String {
    let key = unique_name("rate");
    cleanup.queue(topology::rate_token_queue(&key));
    cleanup.queue(topology::rate_lock_queue(&key));
    cleanup.queue(topology::rate_issuer_queue(&key));
    key
}

fn workers(queue: &TestQueue, n: usize, concurrency: &str) -> Vec<Process> {
    (0..n).map(|_| lepus_tests::start_worker(queue.name(), &["--concurrency", concurrency])).collect()
}

/// Enqueues `n` `test.flaky` jobs (each succeeds at once) recording to `record`, at `rate` under `key`.
async fn backlog(queue: &TestQueue, record: &str, rate: Rate, key: &str, n: usize) {
    let client = connect().await;
    let job = Flaky { record: record.to_owned(), ..Flaky::default() };
    let requests = (0..n).map(|_| Request::new(job.clone()).queue(queue.name()).rate_limit(rate).rate_key(key));
    let sent = client.enqueue_many(requests).await;
    assert!(sent.iter().all(Result::is_ok), "every job enqueued");
    client.close().await.expect("closed");
}

/// The recorded start times (Unix ms), sorted.
fn starts(record: &str) -> Vec<u128> {
    let mut at: Vec<u128> = Flaky::runs(record).into_iter().map(|run| run.at_ms).collect();
    at.sort_unstable();
    at
}

/// Starts within `[from, from + length)`.
fn count_in(starts: &[u128], from: u128, length: u128) -> usize {
    starts.iter().filter(|at| **at >= from && **at < from + length).count()
}

/// The most starts in any `window` ms inside `[from, to)` (windows begin at each start).
fn busiest(starts: &[u128], from: u128, to: u128, window: u128) -> usize {
    starts
        .iter()
        .filter(|at| **at >= from && **at + window <= to)
        .map(|at| count_in(starts, *at, window))
        .max()
        .unwrap_or(0)
}

async fn wait_for_starts(record: &str, what: &str, timeout: Duration, enough: impl Fn(&[u128]) -> bool) -> Vec<u128> {
    let deadline = Instant::now() + timeout;
    loop {
        let at = starts(record);
        if enough(&at) {
            return at;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {} starts", at.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn four_workers_start_jobs_at_the_rate_for_a_minute() {
    let mut cleanup = Cleanup::default();
    let key = rate_key(&mut cleanup);
    let queue = TestQueue::declare("rate-steady").await;
    let record = temp_file("rate-steady");
    let workers = workers(&queue, 4, "4");
    queue.wait_for_consumers(4).await;
    backlog(&queue, &record, Rate::per_sec(RATE), &key, 1500).await;

    let at = wait_for_starts(&record, "61 s of starts", Duration::from_secs(100), |at| {
        at.len() > 1 && at[at.len() - 1] - at[0] >= 61_000
    })
    .await;
    let first = at[0];
    let total = count_in(&at, first, 60_000);
    let per_second: Vec<usize> = (0..60).map(|s| count_in(&at, first + s * 1000, 1000)).collect();
    let busiest_5s = busiest(&at, first, first + 60_000, 5000);
    let quietest_5s = (0..=55).map(|s| count_in(&at, first + s * 1000, 5000)).min().unwrap_or(0);
    let issuer = rate_issuer(queue.broker(), &key).await.expect("read").expect("an issuer announced itself");
    println!(
        "rate {RATE}/s, 4 workers, 60 s: {total} starts ({:.1}/s); per second min {} max {}; 5 s windows: \
         busiest {busiest_5s} (limit {}), quietest {quietest_5s}; issuer {}",
        total as f64 / 60.0,
        per_second.iter().min().unwrap_or(&0),
        per_second.iter().max().unwrap_or(&0),
        RATE * 5,
        issuer.node
    );
    let expected = f64::from(RATE) * 60.0;
    assert!((total as f64 - expected).abs() <= expected * 0.10, "{total} starts in 60 s, expected {expected} ± 10 %");
    assert!(busiest_5s as f64 <= f64::from(RATE) * 5.0 * 1.10, "{busiest_5s} starts in a 5 s window");
    let nodes: Vec<String> = workers.iter().map(lepus_tests::node_name).collect();
    assert!(nodes.contains(&issuer.node), "the issuer {} is one of the workers {nodes:?}", issuer.node);
    assert_eq!(issuer.rate, "20/s");
    drop(workers);
}

#[tokio::test(flavor = "multi_thread")]
async fn when_the_issuer_is_killed_another_worker_issues_within_seconds() {
    let mut cleanup = Cleanup::default();
    let key = rate_key(&mut cleanup);
    let queue = TestQueue::declare("rate-failover").await;
    let record = temp_file("rate-failover");
    let mut workers = workers(&queue, 4, "4");
    queue.wait_for_consumers(4).await;
    backlog(&queue, &record, Rate::per_sec(RATE), &key, 900).await;
    wait_for_starts(&record, "100 starts", Duration::from_secs(30), |at| at.len() >= 100).await;

    let issuer = rate_issuer(queue.broker(), &key).await.expect("read").expect("an issuer");
    let nodes: Vec<String> = workers.iter().map(lepus_tests::node_name).collect();
    let index = nodes.iter().position(|node| *node == issuer.node).expect("the issuer is one of the workers");
    let killed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_millis();
    workers[index].kill();

    let at = wait_for_starts(&record, "15 s of starts after the kill", Duration::from_secs(40), |at| {
        at.last().is_some_and(|last| *last >= killed_at + 15_000)
    })
    .await;
    let after: Vec<u128> = at.iter().copied().filter(|t| *t >= killed_at - 1000).collect();
    let gap = after.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap_or(u128::MAX);
    let first_after = at.iter().copied().find(|t| *t > killed_at).unwrap_or(u128::MAX) - killed_at;
    let settled = count_in(&at, killed_at + 5000, 10_000);
    let busiest_5s = busiest(&at, killed_at, killed_at + 15_000, 5000);
    let successor = rate_issuer(queue.broker(), &key).await.expect("read").expect("a new issuer");
    println!(
        "issuer {} killed: first start {first_after} ms after, longest gap between starts {gap} ms; \
         then {settled} starts in 10 s (limit {}), busiest 5 s window {busiest_5s}; new issuer {}",
        issuer.node,
        RATE * 10,
        successor.node
    );
    assert!(gap <= 3000, "starts stopped for {gap} ms after the issuer died");
    assert_ne!(successor.node, issuer.node, "another worker issues");
    assert!(nodes.contains(&successor.node));
    let expected = f64::from(RATE) * 10.0;
    assert!((settled as f64 - expected).abs() <= expected * 0.10, "{settled} starts in 10 s after the takeover");
    assert!(busiest_5s as f64 <= f64::from(RATE) * 5.0 * 1.10, "{busiest_5s} starts in a 5 s window");
    drop(workers);
}

#[tokio::test]
async fn a_malformed_rate_header_dead_letters_the_job_with_the_reason() {
    let queue = TestQueue::declare("rate-bad").await;
    let _worker = lepus_tests::start_worker(queue.name(), &[]);
    queue.wait_for_consumers(1).await;
    let record = temp_file("rate-bad");
    let bad = |header: &str, value: &str| {
        let job = Flaky { record: record.clone(), ..Flaky::default() };
        let (_, mut message) = Request::new(job).into_message(chrono::Utc::now()).expect("message");
        lepus::internal::set_header(&mut message.extra_headers, header, value);
        message
    };
    let messages: Vec<TaskMessage> =
        vec![bad(lepus::RATE_LIMIT_HEADER, "abc/s"), bad(lepus::RATE_LIMIT_HEADER, "10/d"), {
            let mut message = bad(lepus::RATE_LIMIT_HEADER, "5/s");
            lepus::internal::set_header(&mut message.extra_headers, lepus::RATE_KEY_HEADER, "has space");
            message
        }];
    for message in &messages {
        queue.publish(message).await;
    }
    let dlq = queue.dead_letter_queue();
    lepus_tests::wait_until("three dead letters", Duration::from_secs(20), || async {
        queue.ready_in(&dlq).await >= 3
    })
    .await;
    let dead = queue.take_all(&dlq).await;
    assert_eq!(dead.len(), 3);
    let mut errors = Vec::new();
    for delivery in &dead {
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let text = |name: &str| lepus::internal::header_str(&headers, name).map(|v| v.into_owned());
        println!("dead letter: {:?} {:?}", text("x-lepus-reason"), text("x-lepus-error"));
        assert_eq!(text("x-lepus-reason").as_deref(), Some("bad-rate-limit"));
        errors.push(text("x-lepus-error").unwrap_or_default());
    }
    for expected in ["abc/s", "10/d", "has space"] {
        assert!(errors.iter().any(|error| error.contains(expected)), "no error names {expected:?}: {errors:?}");
    }
    assert!(starts(&record).is_empty(), "no job ran");
    assert_eq!(queue.ready().await, 0, "nothing redelivered");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_waiting_for_a_token_is_handed_back_within_the_prefetch() {
    let mut cleanup = Cleanup::default();
    let key = rate_key(&mut cleanup);
    let queue = TestQueue::declare("rate-wait").await;
    let record = temp_file("rate-wait");
    let metrics = free_address();
    let _worker =
        lepus_tests::start_worker(queue.name(), &["--concurrency", "2", "--metrics-addr", &metrics.to_string()]);
    queue.wait_for_consumers(1).await;
    // One a minute: the first starts at once (the bucket starts full, one token), the rest wait.
    backlog(&queue, &record, Rate::per_minute(1), &key, 6).await;
    let started = Instant::now();
    let mut most_unacked = 0;
    while started.elapsed() < Duration::from_secs(25) {
        most_unacked = most_unacked.max(queue.unacked());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deferred = Samples::scrape(metrics)
        .get(&format!("lepus_jobs_total{{queue=\"{}\",job=\"test.flaky\",outcome=\"deferred\"}}", queue.name()))
        .unwrap_or(0.0);
    let ran = starts(&record).len();
    let ready = queue.ready().await;
    println!(
        "1/m, concurrency 2, 25 s: {ran} started, {deferred} handed back, at most {most_unacked} unacked, {ready} ready"
    );
    assert_eq!(ran, 1, "one token in the first minute");
    assert!(most_unacked <= 2, "{most_unacked} unacked: more than the prefetch");
    // Each of the two waiting slots hands a job back every 10 s: at least 2 rounds in 25 s.
    assert!(deferred >= 3.0, "only {deferred} jobs handed back");
    assert!((3..=5).contains(&ready), "{ready} ready: the waiting jobs are in the queue, none lost");
}

/// A job type with a rate limit of its own: 5 a second.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Typed {
    n: u32,
}

impl lepus::Job for Typed {
    const NAME: &'static str = "test.rate_typed";
    type Output = ();

    fn rate_limit() -> Option<Rate> {
        Some(Rate::per_sec(5))
    }
}

#[derive(Clone, Default)]
struct Started(std::sync::Arc<std::sync::Mutex<Vec<Instant>>>);

async fn typed(
    _: Typed,
    lepus_worker::State(started): lepus_worker::State<Started>,
) -> Result<(), lepus_worker::JobError> {
    started.0.lock().expect("lock").push(Instant::now());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_types_own_limit_applies_under_the_requests_key() {
    let mut cleanup = Cleanup::default();
    let key = rate_key(&mut cleanup);
    // The worker also knows the job type's limit under its task name from start-up.
    cleanup.queue(topology::rate_token_queue(<Typed as lepus::Job>::NAME));
    cleanup.queue(topology::rate_issuer_queue(<Typed as lepus::Job>::NAME));
    let queue = TestQueue::declare("rate-typed").await;
    let started = Started::default();
    let config = lepus_worker::WorkerConfig::default().amqp_url(lepus_tests::amqp_url()).queues([queue.name()]);
    let worker = lepus_worker::Worker::new(config).state(started.clone()).register(typed);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async { drop(stopped.await) }));
    queue.wait_for_consumers(1).await;
    let client = connect().await;
    let requests = (0..30).map(|n| Request::new(Typed { n }).queue(queue.name()).rate_key(key.as_str()));
    assert!(client.enqueue_many(requests).await.iter().all(Result::is_ok));
    lepus_tests::wait_until("30 starts", Duration::from_secs(30), || async {
        started.0.lock().expect("lock").len() >= 30
    })
    .await;
    let at = started.0.lock().expect("lock").clone();
    let span = at[29].duration_since(at[0]).as_secs_f64();
    // The bucket starts with one token (5/s banks a tenth of a second's worth, at least 1).
    let per_second = 29.0 / span;
    let issuer = rate_issuer(queue.broker(), &key).await.expect("read").expect("an issuer");
    println!(
        "job type limit 5/s under key {key}: 30 starts over {span:.2} s ({per_second:.2}/s); issuer rate {}",
        issuer.rate
    );
    assert_eq!(issuer.rate, "5/s", "the job type's rate, under the request's key");
    assert!((4.0..=5.5).contains(&per_second), "{per_second:.2} starts/s under a limit of 5/s");
    client.close().await.expect("closed");
    stop.send(()).expect("the worker runs");
    running.await.expect("joined").expect("the worker stopped cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_celery_clients_set_the_limit_with_headers() {
    let mut cleanup = Cleanup::default();
    let key = rate_key(&mut cleanup);
    let queue = TestQueue::declare("rate-python").await;
    let record = temp_file("rate-python");
    let _workers = workers(&queue, 2, "4");
    queue.wait_for_consumers(2).await;
    let sent = lepus_tests::run_python_with(
        "rate_limited.py",
        queue.name(),
        &[
            ("LEPUS_TEST_JOBS", "16"),
            ("LEPUS_TEST_RATE", "5/s"),
            ("LEPUS_TEST_RATE_KEY", &key),
            ("LEPUS_TEST_RECORD", &record),
        ],
    )
    .await;
    let bad_id = sent[0]["bad"].as_str().expect("the bad job's id").to_owned();
    let at = wait_for_starts(&record, "16 starts", Duration::from_secs(30), |at| at.len() >= 16).await;
    let span = (at[15] - at[0]) as f64 / 1000.0;
    let per_second = 15.0 / span;
    let dlq = queue.dead_letter_queue();
    lepus_tests::wait_until("the bad job dead-lettered", Duration::from_secs(10), || async {
        queue.ready_in(&dlq).await >= 1
    })
    .await;
    let dead = queue.take_all(&dlq).await;
    let headers = dead[0].properties.headers().clone().unwrap_or_default();
    let text = |name: &str| lepus::internal::header_str(&headers, name).map(|v| v.into_owned());
    println!(
        "Python, 5/s over 2 workers: 16 starts over {span:.2} s ({per_second:.2}/s); bad job {:?}: {:?}",
        text("id"),
        text("x-lepus-error")
    );
    assert!((4.0..=5.5).contains(&per_second), "{per_second:.2} starts/s under a limit of 5/s");
    assert_eq!(dead.len(), 1);
    assert_eq!(text("id").as_deref(), Some(bad_id.as_str()));
    assert_eq!(text("x-lepus-reason").as_deref(), Some("bad-rate-limit"));
    assert_eq!(at.len(), 16, "the bad job never ran");
}
