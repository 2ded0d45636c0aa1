//! A worker's and a scheduler's `/metrics`, `/livez` and `/readyz`: every counter counts exactly
//! what the process did, `promtool check metrics` accepts the page, and `/readyz` answers 503
//! within 2 s of the broker closing every connection and 200 again once the process is back.
//! While the test watches for the 503, the broker's listeners are suspended, so that no process
//! can get back before it is seen.
//!
//! These tests run alone (the `broker-disruption` group): one closes every connection, and a
//! worker's batch tracker counts completed batches only while no other worker's tracker is active.

use chrono::{TimeDelta, Utc};
use lepus::protocol::{Arguments, ResultMessage, Status, TaskMessage};
use lepus::{Batch, Pending, Request};
use lepus_demo::jobs::{Add, Fail};
use lepus_tests::{
    Flaky, Samples, TestQueue, connect, free_address, http_get, rabbitmqctl, scheduler_binary, start_worker, temp_file,
    wait_until,
};
use serde_json::json;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A job's result message, awaited later.
type Result = Pin<Box<dyn Future<Output = lepus::Result<ResultMessage>> + Send>>;

fn result_of<T: Send + 'static>(pending: lepus::Result<Pending<T>>) -> Result {
    Box::pin(pending.expect("submitted").result_message(TIMEOUT))
}

#[tokio::test]
async fn every_counter_counts_exactly_what_the_worker_did_and_promtool_accepts_the_page() {
    let queue = TestQueue::declare("metrics").await;
    let address = free_address();
    let _worker = start_worker(queue.name(), &["--metrics-addr", &address.to_string(), "--concurrency", "4"]);
    queue.wait_for_consumers(1).await;
    let client = connect().await;
    let q = queue.name();

    let mut results: Vec<Result> = Vec::new();
    for i in 0..5 {
        results.push(result_of(client.submit(Request::new(Add { a: i, b: 1 }).queue(q)).await));
    }
    for _ in 0..2 {
        let fail = Fail { message: "on purpose".into() };
        results.push(result_of(client.submit(Request::new(fail).queue(q)).await));
    }
    let flaky = Flaky { fail_times: 1, record: temp_file("metrics-flaky"), ..Flaky::default() };
    results.push(result_of(client.submit(Request::new(flaky).queue(q)).await));
    let expired = Request::new(Add { a: 0, b: 0 }).queue(q).expires_at(Utc::now() - TimeDelta::seconds(1));
    results.push(result_of(client.submit(expired).await));
    results.push(result_of(client.submit(Request::task("no.such.job", Arguments::default()).queue(q)).await));
    let batch =
        Batch::new().job(Request::new(Add { a: 1, b: 1 }).queue(q)).job(Request::new(Add { a: 2, b: 2 }).queue(q));
    let batch = client.enqueue_batch(batch).await.expect("batch enqueued");
    // One that arrives before its eta (as from an older Celery client) goes back to wait once.
    let mut early =
        TaskMessage::new("demo.add", Arguments { args: vec![json!(1), json!(1)], kwargs: Default::default() });
    early.eta = Some(Utc::now() + TimeDelta::seconds(2));
    queue.publish(&early).await;
    queue.publish_raw(b"not a celery message", lepus::lapin::BasicProperties::default()).await;

    let statuses: Vec<Status> = {
        let mut statuses = Vec::new();
        for result in results {
            statuses.push(result.await.expect("a result").status);
        }
        statuses
    };
    assert_eq!(statuses.iter().filter(|s| **s == Status::Success).count(), 6, "{statuses:?}");
    wait_until("the batch completes", TIMEOUT, || async {
        client.batch_progress(&batch).await.is_ok_and(|progress| progress.complete)
    })
    .await;

    // Outcomes are counted once their ack is sent, a moment after the result.
    let series =
        |job: &str, outcome: &str| format!("lepus_jobs_total{{queue=\"{q}\",job=\"{job}\",outcome=\"{outcome}\"}}");
    let expected = [
        (series("demo.add", "succeeded"), 8.0), // 5, the batch's 2, and the early one once due
        (series("demo.add", "deferred"), 1.0),
        (series("demo.add", "expired"), 1.0),
        (series("demo.add", "failed"), 0.0),
        (series("demo.add", "retried"), 0.0),
        (series("demo.add", "dead_lettered"), 0.0),
        (series("demo.fail", "failed"), 2.0),
        (series("demo.fail", "succeeded"), 0.0),
        (series("demo.fail", "retried"), 0.0),
        (series("test.flaky", "retried"), 1.0),
        (series("test.flaky", "succeeded"), 1.0),
        (series("test.flaky", "failed"), 0.0),
        (series("(unknown)", "dead_lettered"), 2.0), // the unknown job and the undecodable body
        (series("(unknown)", "succeeded"), 0.0),
        (format!("lepus_job_duration_seconds_count{{queue=\"{q}\",job=\"demo.add\"}}"), 8.0),
        (format!("lepus_job_duration_seconds_count{{queue=\"{q}\",job=\"demo.fail\"}}"), 2.0),
        (format!("lepus_job_duration_seconds_count{{queue=\"{q}\",job=\"test.flaky\"}}"), 2.0),
        (format!("lepus_job_duration_seconds_count{{queue=\"{q}\",job=\"demo.noop\"}}"), 0.0),
        (format!("lepus_jobs_in_flight{{queue=\"{q}\"}}"), 0.0),
        ("lepus_worker_concurrency".to_owned(), 4.0),
        ("lepus_broker_connected".to_owned(), 1.0),
        ("lepus_broker_reconnects_total".to_owned(), 0.0),
        ("lepus_batches_completed_total".to_owned(), 1.0),
    ];
    let mismatches = |samples: &Samples| -> Vec<String> {
        expected
            .iter()
            .filter(|(series, value)| samples.get(series) != Some(*value))
            .map(|(series, value)| format!("{series}: {:?}, expected {value}", samples.get(series)))
            .collect()
    };
    let settled = tokio::time::timeout(Duration::from_secs(10), async {
        while !mismatches(&Samples::scrape(address)).is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert!(settled.await.is_ok(), "the counters did not settle: {:?}", mismatches(&Samples::scrape(address)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, page) = http_get(&format!("http://{address}/metrics")).expect("metrics");
    assert_eq!(status, 200);
    assert_eq!(mismatches(&Samples::parse(&page)), Vec::<String>::new(), "nothing more was counted");
    assert!(!page.contains("no.such.job"), "an unknown job name makes no series of its own");

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus)");
    promtool.stdin.take().expect("stdin").write_all(page.as_bytes()).expect("page written");
    let checked = promtool.wait_with_output().expect("promtool ends");
    assert!(
        checked.status.success(),
        "promtool check metrics refused the page:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    client.close().await.expect("closed");
}

/// A schedule file with one schedule firing `demo.noop` into `queue` every second.
fn every_second(queue: &str) -> String {
    let path = temp_file("metrics-schedules");
    let text =
        format!("[[schedule]]\nname = \"pulse\"\ncron = \"* * * * * *\"\njob = \"demo.noop\"\nqueue = \"{queue}\"\n");
    std::fs::write(&path, text).expect("written");
    path
}

/// The broker's listeners, suspended (no new connection is accepted) until this is dropped.
struct Suspended;

impl Suspended {
    fn now() -> Self {
        rabbitmqctl(&["suspend_listeners"]);
        Self
    }
}

impl Drop for Suspended {
    fn drop(&mut self) {
        rabbitmqctl(&["resume_listeners"]);
    }
}

fn readyz(address: std::net::SocketAddr) -> Option<u16> {
    http_get(&format!("http://{address}/readyz")).map(|(status, _)| status)
}

#[tokio::test]
async fn readyz_is_503_within_two_seconds_of_losing_the_broker_and_200_once_back() {
    let queue = TestQueue::declare("readyz").await;
    let (worker_at, scheduler_at) = (free_address(), free_address());
    let _worker = start_worker(queue.name(), &["--metrics-addr", &worker_at.to_string()]);
    let group = lepus_tests::unique_name("readyz");
    // Declared before the scheduler, so that it stops before its queues are deleted.
    let mut cleanup = lepus_tests::Cleanup::default();
    cleanup.queue(lepus::internal::topology::scheduler_leader_queue(&group));
    cleanup.queue(lepus::internal::topology::schedule_state_queue(&group, "pulse"));
    let mut command = Command::new(scheduler_binary());
    command.args(["run", "--schedules", &every_second(queue.name()), "--group", &group, "--heartbeat", "2s"]);
    command.args(["--metrics-addr", &scheduler_at.to_string()]);
    let _scheduler = lepus_tests::spawn(command, "scheduler");

    for (what, address) in [("worker", worker_at), ("scheduler", scheduler_at)] {
        wait_until(&format!("the {what} is ready"), TIMEOUT, || async move { readyz(address) == Some(200) }).await;
        assert_eq!(http_get(&format!("http://{address}/livez")).map(|(s, _)| s), Some(200), "{what} lives");
    }
    wait_until("the scheduler leads", TIMEOUT, || async {
        Samples::scrape(scheduler_at).get("lepus_scheduler_leader") == Some(1.0)
    })
    .await;

    // No reconnection may succeed while the test watches: listeners stay suspended until the
    // guard resumes them (also if the test fails).
    let suspended = Suspended::now();
    rabbitmqctl(&["close_all_connections", "readyz test"]);
    let cut = Instant::now();
    let mut unready = [None, None];
    while unready.iter().any(Option::is_none) && cut.elapsed() < Duration::from_secs(5) {
        for (index, address) in [worker_at, scheduler_at].into_iter().enumerate() {
            if unready[index].is_none() && readyz(address) == Some(503) {
                unready[index] = Some(cut.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (what, after) in ["worker", "scheduler"].iter().zip(unready) {
        let after = after.unwrap_or_else(|| panic!("the {what}'s /readyz never answered 503"));
        println!("the {what}'s /readyz answered 503 {after:?} after close_all_connections");
        assert!(after < Duration::from_secs(2), "the {what} answered 503 after {after:?}");
    }
    assert_eq!(readyz(worker_at), Some(503), "still not ready while the broker refuses connections");
    drop(suspended);
    for (what, address) in [("worker", worker_at), ("scheduler", scheduler_at)] {
        wait_until(&format!("the {what} is ready again"), TIMEOUT, || async move { readyz(address) == Some(200) })
            .await;
        let samples = Samples::scrape(address);
        assert_eq!(samples.get("lepus_broker_connected"), Some(1.0), "{what}");
        assert_eq!(samples.get("lepus_broker_reconnects_total"), Some(1.0), "{what}");
    }
}
