//! Time limits cancel an overrunning handler on time; a panicking handler fails its job, not the
//! worker.

use lepus::dead_letter::ERROR_HEADER;
use lepus::internal::header_str;
use lepus::protocol::{Arguments, TaskMessage};
use lepus::{Error, Request};
use lepus_demo::jobs::{Add, Sleep};
use lepus_tests::{Panic, connect, wait_until};
use serde_json::json;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_handler_over_its_time_limit_is_cancelled_within_a_second() {
    let (queue, _worker) = lepus_tests::queue_with_worker("limit").await;
    let client = connect().await;

    let started = Instant::now();
    let request = Request::new(Sleep { seconds: 30.0 }).queue(queue.name()).time_limit(Duration::from_secs(1));
    match client.call(request, TIMEOUT).await {
        Err(Error::JobFailed { exception, .. }) => assert_eq!(exception.exc_type, "TimeLimitExceeded"),
        other => panic!("expected a time-limit failure, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(2), "failed after {took:?}");
    let dlq = queue.dead_letter_queue();
    wait_until("the first job is dead-lettered", TIMEOUT, || async { queue.ready_in(&dlq).await == 1 }).await;
    assert_eq!(queue.take_all(&dlq).await.len(), 1);

    // Celery's own `timelimit` header (`[hard, soft]`) works the same way; with no caller to
    // answer, the failure shows in the dead-letter queue.
    let mut celery = TaskMessage::new("demo.sleep", Arguments::default());
    celery.arguments.kwargs.insert("seconds".into(), json!(30));
    celery.time_limit.hard = Some(1.0);
    let started = Instant::now();
    queue.publish(&celery).await;
    wait_until("the timed-out job is dead-lettered", TIMEOUT, || async { queue.ready_in(&dlq).await == 1 }).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(3), "dead-lettered after {took:?}");
    let letter = queue.take_all(&dlq).await.pop().expect("a dead letter");
    assert_eq!(letter.properties.correlation_id().as_ref().map(|id| id.as_str()), Some(celery.id.as_str()));
    let headers = letter.properties.headers().clone().unwrap_or_default();
    let error = header_str(&headers, ERROR_HEADER).expect("an error").into_owned();
    assert!(error.contains("time limit of 1s"), "{error}");
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_panicking_handler_fails_its_job_and_the_worker_keeps_serving() {
    let (queue, mut worker) = lepus_tests::queue_with_worker("panic").await;
    let client = connect().await;

    match client.call(Request::new(Panic {}).queue(queue.name()), TIMEOUT).await {
        Err(Error::JobFailed { exception, .. }) => {
            assert_eq!(exception.exc_type, "JobPanicked");
            assert!(exception.message().contains("panics on purpose"), "{}", exception.message());
        }
        other => panic!("expected a panic failure, got {other:?}"),
    }
    assert_eq!(client.call(Request::new(Add { a: 1, b: 2 }).queue(queue.name()), TIMEOUT).await.expect("sum"), 3);
    assert!(worker.wait_exit(Duration::ZERO).await.is_none(), "the worker is still running");
    client.close().await.expect("closed");
}
