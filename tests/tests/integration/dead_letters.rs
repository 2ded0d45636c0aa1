//! Bad input is dead-lettered with its reason, the caller (if any) gets a failure, and the worker
//! keeps serving.

use lepus::Request;
use lepus::dead_letter::{ERROR_HEADER, QUEUE_HEADER, REASON_HEADER};
use lepus::internal::header_str;
use lepus::protocol::{Arguments, TaskMessage};
use lepus::{Error, lapin::types::FieldTable};
use lepus_demo::jobs::Add;
use lepus_tests::{TestQueue, connect, wait_until};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn bad_messages_are_dead_lettered_with_a_reason_and_the_worker_keeps_serving() {
    let queue = TestQueue::declare("dead").await;
    let _worker = lepus_tests::start_worker(queue.name(), &["--max-payload", "4096"]);
    queue.wait_for_consumers(1).await;
    let client = connect().await;

    // Garbage: Celery headers, but a body that is not JSON at all.
    let (_, celery_properties) = TaskMessage::new("demo.add", Arguments::default()).encode().expect("encodes");
    queue.publish_raw(b"\x00\xffnot json", celery_properties).await;
    // Too large for this worker.
    let mut huge = TaskMessage::new("demo.echo", Arguments::default());
    huge.arguments.kwargs.insert("blob".into(), json!("x".repeat(10_000)));
    queue.publish(&huge).await;
    // An unknown job name, from a caller waiting for the result.
    let unknown = client.call(Request::task("no.such.job", Arguments::default()).queue(queue.name()), TIMEOUT).await;
    match unknown {
        Err(Error::JobFailed { exception, .. }) => assert_eq!(exception.exc_type, "NotRegistered"),
        other => panic!("expected a NotRegistered failure, got {other:?}"),
    }
    // Arguments of the wrong type.
    let wrong = Arguments { args: vec![json!("two"), json!(3)], kwargs: Default::default() };
    match client.call(Request::task("demo.add", wrong).queue(queue.name()), TIMEOUT).await {
        Err(Error::JobFailed { exception, .. }) => {
            assert_eq!(exception.exc_type, "TypeError");
            assert!(exception.message().contains("invalid type"), "{}", exception.message());
        }
        other => panic!("expected a TypeError failure, got {other:?}"),
    }

    let dlq = queue.dead_letter_queue();
    wait_until("four dead letters", TIMEOUT, || async { queue.ready_in(&dlq).await == 4 }).await;
    let mut reasons = BTreeMap::new();
    for letter in queue.take_all(&dlq).await {
        let headers = letter.properties.headers().clone().unwrap_or_else(FieldTable::default);
        let reason = header_str(&headers, REASON_HEADER).expect("reason header").into_owned();
        let error = header_str(&headers, ERROR_HEADER).expect("error header").into_owned();
        assert_eq!(header_str(&headers, QUEUE_HEADER).as_deref(), Some(queue.name()));
        reasons.insert(reason, error);
    }
    assert_eq!(
        reasons.keys().map(String::as_str).collect::<Vec<_>>(),
        ["bad-input", "too-large", "undecodable", "unknown-job"]
    );
    assert!(reasons["undecodable"].contains("not JSON"), "{reasons:?}");
    assert!(reasons["unknown-job"].contains("no.such.job"), "{reasons:?}");
    assert!(reasons["too-large"].contains("4096"), "{reasons:?}");

    // The worker is still serving, and nothing is stuck in the work queue.
    assert_eq!(client.call(Request::new(Add { a: 2, b: 3 }).queue(queue.name()), TIMEOUT).await.expect("sum"), 5);
    assert_eq!(queue.ready().await, 0);
    client.close().await.expect("closed");
}
