//! Sending errors are errors: no queue, too large, a bad queue name, no result in time.

use lepus::{ClientOptions, Error, Request};
use lepus_demo::jobs::{Add, Echo};
use lepus_tests::{TestQueue, amqp_url, connect, unique_name};
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
