//! SIGTERM drains: running jobs finish and are acked, queued ones stay for other workers, the
//! process exits 0 within its grace period; a job outliving the grace period is handed back.

use lepus::Request;
use lepus::protocol::Status;
use lepus_demo::jobs::Sleep;
use lepus_tests::{TestQueue, connect, wait_until};
use std::time::{Duration, Instant};

#[tokio::test]
async fn sigterm_finishes_running_jobs_and_exits_zero() {
    let queue = TestQueue::declare("sigterm").await;
    let mut worker = lepus_tests::start_worker(queue.name(), &["--concurrency", "4", "--grace-period", "20s"]);
    queue.wait_for_consumers(1).await;
    let client = connect().await;
    let mut pending = Vec::new();
    for _ in 0..6 {
        pending.push(client.submit(Request::new(Sleep { seconds: 1.5 }).queue(queue.name())).await.expect("submitted"));
    }
    wait_until("four jobs are running", Duration::from_secs(10), || async { queue.ready().await == 2 }).await;

    worker.terminate().expect("SIGTERM sent");
    let signalled = Instant::now();
    let status = worker.wait_exit(Duration::from_secs(20)).await.expect("the worker exits within its grace period");
    assert!(status.success(), "exit status {status:?}; log:\n{}", worker.log());
    assert!(signalled.elapsed() < Duration::from_secs(10), "took {:?}", signalled.elapsed());

    // The worker's connection is closed, so nothing is unacked: the two jobs that had not started
    // are queued, and the four that ran were acked, not handed back.
    assert_eq!(queue.ready().await, 2);
    assert_eq!(queue.consumers().await, 0);

    let next = lepus_tests::start_worker(queue.name(), &["--concurrency", "4"]);
    let mut by_worker = std::collections::HashMap::new();
    for job in pending {
        let result = job.result_message(Duration::from_secs(20)).await.expect("every job completes");
        assert_eq!(result.status, Status::Success, "{result:?}");
        *by_worker.entry(result.worker.expect("worker named")).or_insert(0) += 1;
    }
    assert_eq!(by_worker.get(&lepus_tests::node_name(&worker)), Some(&4), "{by_worker:?}");
    assert_eq!(by_worker.get(&lepus_tests::node_name(&next)), Some(&2), "{by_worker:?}");
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_job_outliving_the_grace_period_is_handed_back_to_the_queue() {
    let queue = TestQueue::declare("grace").await;
    let metrics = lepus_tests::free_address();
    let args = ["--concurrency", "1", "--grace-period", "500ms", "--metrics-addr", &metrics.to_string()];
    let mut worker = lepus_tests::start_worker(queue.name(), &args);
    queue.wait_for_consumers(1).await;
    let client = connect().await;
    client.enqueue(Request::new(Sleep { seconds: 30.0 }).queue(queue.name())).await.expect("enqueued");
    // Running, not merely prefetched (a delivery not yet started is handed back at once).
    let running = format!("lepus_jobs_in_flight{{queue=\"{}\"}}", queue.name());
    wait_until("the job is running", Duration::from_secs(10), || async {
        lepus_tests::Samples::scrape(metrics).get(&running) == Some(1.0)
    })
    .await;

    worker.terminate().expect("SIGTERM sent");
    let status = worker.wait_exit(Duration::from_secs(10)).await.expect("the worker exits after its grace period");
    assert_eq!(status.code(), Some(1), "log:\n{}", worker.log());
    wait_until("the job is back in the queue", Duration::from_secs(10), || async { queue.ready().await == 1 }).await;
    client.close().await.expect("closed");
}
