//! Sending errors are errors: no queue, too large, a bad queue name, no result in time.

use lepus::{ClientOptions, Error, Request};
use lepus_demo::jobs::{Add, Echo};
use lepus_tests::{TestQueue, amqp_url, connect, unique_name, wait_until};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn enqueue_to_a_queue_that_does_not_exist_is_an_error() {
    let client = connect().await;
    let missing = unique_name("missing");
    match client.enqueue(Request::new(Add { a: 1, b: 2 }).queue(missing.as_str())).await {
        Err(Error::Unroutable { routing_key, .. }) => assert_eq!(routing_key, missing),
        other => panic!("expected Unroutable, got {other:?}"),
    }
    // The client's channel survives the failure.
    let queue = TestQueue::declare("exists").await;
    client.enqueue(Request::new(Add { a: 1, b: 2 }).queue(queue.name())).await.expect("enqueued");
    assert_eq!(queue.ready().await, 1);
}

#[tokio::test]
async fn oversized_and_misaddressed_jobs_are_refused_before_sending() {
    let options = ClientOptions::default().max_payload(1024);
    let client = lepus::Client::connect_with(&amqp_url(), options).await.expect("connected");
    let queue = TestQueue::declare("limits").await;
    let big = Echo(json!({"blob": "x".repeat(2000)}).as_object().cloned().unwrap_or_default());
    match client.enqueue(Request::new(big).queue(queue.name())).await {
        Err(Error::PayloadTooLarge { limit: 1024, size }) => assert!(size > 2000),
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    assert!(matches!(
        client.enqueue(Request::new(Add { a: 1, b: 2 }).queue("amq.reserved")).await,
        Err(Error::InvalidName { .. })
    ));
    assert_eq!(queue.ready().await, 0, "nothing was sent");
}

#[tokio::test]
async fn a_call_without_a_worker_times_out() {
    let queue = TestQueue::declare("no-worker").await;
    let client = connect().await;
    let started = std::time::Instant::now();
    match client.call(Request::new(Add { a: 1, b: 2 }).queue(queue.name()), Duration::from_millis(300)).await {
        Err(Error::Timeout { .. }) => assert!(started.elapsed() < Duration::from_secs(5)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    client.close().await.expect("closed");
}

#[tokio::test]
async fn an_unreachable_broker_is_a_connect_error_without_the_password() {
    match lepus::Client::connect("amqp://guest:hunter2@127.0.0.1:1/%2f").await {
        Err(e @ Error::Connect { .. }) => {
            let shown = e.to_string();
            assert!(!shown.contains("hunter2") && shown.contains("guest:***@127.0.0.1:1"), "{shown}");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
}

#[tokio::test]
async fn client_futures_can_be_spawned_on_other_threads() {
    let queue = TestQueue::declare("spawn").await;
    let client = connect().await;
    let spawned = tokio::spawn({
        let client = client.clone();
        let name = queue.name().to_owned();
        async move { client.enqueue(Request::new(Add { a: 1, b: 2 }).queue(name)).await }
    });
    spawned.await.expect("joined").expect("enqueued");
    assert_eq!(queue.ready().await, 1);
}

#[tokio::test]
async fn a_pending_result_is_awaited_directly_within_the_clients_result_timeout() {
    let queue = TestQueue::declare("await").await;
    let options = ClientOptions::default().result_timeout(Duration::from_millis(400));
    let client = lepus::Client::connect_with(&amqp_url(), options).await.expect("connected");

    // No worker yet: awaiting gives up after the client's result timeout.
    let started = std::time::Instant::now();
    match client.submit(Request::new(Add { a: 1, b: 2 }).queue(queue.name())).await.expect("sent").await {
        Err(Error::Timeout { after, .. }) => assert_eq!(after, Duration::from_millis(400)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));

    let _worker = lepus_tests::start_worker(queue.name(), &[]);
    queue.wait_for_consumers(1).await;
    let pending = client.submit(Request::new(Add { a: 20, b: 22 }).queue(queue.name())).await.expect("sent");
    let sum: i64 = tokio::time::timeout(Duration::from_secs(20), async { pending.await })
        .await
        .expect("in time")
        .expect("the sum");
    assert_eq!(sum, 42);
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_batch_is_known_to_its_sender_at_once_and_to_any_client_once_tracked() {
    let queue = TestQueue::declare("progress-at-once").await;
    let client = lepus_tests::connect().await;
    let id = client
        .enqueue_batch(lepus::Batch::new().job(Request::new(Add { a: 1, b: 1 }).queue(queue.name())))
        .await
        .expect("sent");
    // No worker consumes the queue: the job waits, and the batch with it.
    let progress = client.batch_progress(&id).await.expect("the sender knows its batch at once");
    assert_eq!((progress.total, progress.pending, progress.complete), (1, 1, false));

    let _worker = lepus_tests::start_worker(queue.name(), &[]);
    let other = lepus_tests::connect().await;
    wait_until("another client reads the batch complete", Duration::from_secs(30), || async {
        other.batch_progress(&id).await.is_ok_and(|p| p.complete && p.done == 1)
    })
    .await;
    client.close().await.expect("closed");
    other.close().await.expect("closed");
}
