//! A message that crashes every worker that takes it runs at most the queue's delivery limit
//! times. The worker that then receives it dead-letters it as `delivery-limit`, its caller gets a
//! `FAILURE` (Celery's `WorkerLostError`) instead of waiting forever, its batch completes with it
//! as failed, and workers serve on.

use lepus::WorkQueue;
use lepus::dead_letter::REASON_HEADER;
use lepus::internal::header_str;
use lepus::protocol::Status;
use lepus::{Batch, JobId, Request};
use lepus_demo::jobs::Add;
use lepus_tests::{Abort, Remember, TestQueue, connect, temp_file, unique_name, wait_until};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);
const LIMIT: &str = "2";

async fn poison_queue() -> TestQueue {
    TestQueue::declare_with(WorkQueue::new(unique_name("poison")).expect("name").with_delivery_limit(2)).await
}

/// Starts `crashes` workers one after the other; each must die on the poison job (SIGABRT).
async fn crash_workers(queue: &TestQueue, crashes: usize) {
    for crash in 1..=crashes {
        let mut worker = lepus_tests::start_worker(queue.name(), &["--delivery-limit", LIMIT, "--concurrency", "1"]);
        match worker.wait_exit(TIMEOUT).await {
            Some(status) if !status.success() => {}
            other => panic!("worker {crash} should have crashed: {other:?}\n{}", worker.log()),
        }
        wait_until("the broker sees the worker gone", TIMEOUT, || async { queue.consumers().await == 0 }).await;
    }
}

#[tokio::test]
async fn a_job_that_kills_its_workers_fails_for_its_caller_at_the_delivery_limit() {
    let queue = poison_queue().await;
    let client = connect().await;
    let pending = client.submit(Request::new(Abort {}).queue(queue.name())).await.expect("submitted");

    // Limit 2: it runs twice, killing two workers; the third worker refuses it.
    crash_workers(&queue, 2).await;
    let _worker = lepus_tests::start_worker(queue.name(), &["--delivery-limit", LIMIT]);
    let result = pending.result_message(TIMEOUT).await.expect("a result instead of a timeout");
    assert_eq!(result.status, Status::Failure);
    let exception = result.exception().expect("an exception");
    assert_eq!(exception.exc_type, "WorkerLostError", "{exception:?}");
    assert!(exception.message().contains("delivery limit"), "{exception:?}");

    let dlq = queue.dead_letter_queue();
    wait_until("the poison message is dead-lettered", TIMEOUT, || async { queue.ready_in(&dlq).await == 1 }).await;
    let letter = queue.take_all(&dlq).await.pop().expect("the poison message");
    let headers = letter.properties.headers().clone().unwrap_or_default();
    assert_eq!(header_str(&headers, REASON_HEADER).as_deref(), Some("delivery-limit"));
    assert_eq!(header_str(&headers, "task").as_deref(), Some("test.abort"));

    assert_eq!(client.call(Request::new(Add { a: 1, b: 1 }).queue(queue.name()), TIMEOUT).await.expect("sum"), 2);
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_batch_with_a_job_that_kills_its_workers_still_completes_and_calls_back_once() {
    let queue = poison_queue().await;
    let client = connect().await;
    let calls = temp_file("poison-callback");
    let batch = Batch::new()
        .callback(Request::new(Remember { path: calls.clone(), batch: Default::default() }).queue(queue.name()))
        .job(Request::new(Abort {}).queue(queue.name()))
        .job(Request::new(Add { a: 2, b: 3 }).queue(queue.name()));
    let id = client.enqueue_batch(batch).await.expect("sent");

    crash_workers(&queue, 2).await;
    let _worker = lepus_tests::start_worker(queue.name(), &["--delivery-limit", LIMIT]);
    wait_until("the batch completes", TIMEOUT, || async {
        client.batch_progress(&id).await.expect("progress").complete
    })
    .await;
    let progress = client.batch_progress(&id).await.expect("progress");
    assert_eq!((progress.done, progress.failed, progress.pending), (1, 1, 0), "{progress:?}");
    assert_eq!(progress.failed_jobs, vec![JobId::from(format!("{id}.0"))]);

    wait_until("the callback ran", TIMEOUT, || async { !Remember::calls(&calls).is_empty() }).await;
    tokio::time::sleep(Duration::from_secs(1)).await; // a second call would show up now
    assert_eq!(Remember::calls(&calls).len(), 1, "the callback runs once");
    client.close().await.expect("closed");
}
