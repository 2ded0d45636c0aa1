//! Retries go through the broker's delay cascade with a growing backoff; a job that keeps failing
//! ends in the dead-letter queue with its last error, its attempt count and its original headers;
//! "fail now" skips the remaining attempts.

use lepus::dead_letter::{ATTEMPTS_HEADER, ERROR_HEADER, REASON_HEADER};
use lepus::internal::header_str;
use lepus::protocol::Status;
use lepus::{Error, Request, RetryPolicy};
use lepus_tests::{Flaky, connect, temp_file, wait_until};
use serde_json::json;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_job_failing_twice_then_succeeding_runs_three_times_with_growing_gaps() {
    let (queue, _worker) = lepus_tests::queue_with_worker("retry-ok").await;
    let client = connect().await;
    let record = temp_file("flaky");

    // The job type's own policy: 3 attempts, 1 s then 2 s apart.
    let job = Flaky { fail_times: 2, record: record.clone(), ..Flaky::default() };
    let pending = client.submit(Request::new(job).queue(queue.name())).await.expect("submitted");
    let result = pending.result_message(TIMEOUT).await.expect("a result");
    assert_eq!((result.status, result.result), (Status::Success, json!(3)));

    tokio::time::sleep(Duration::from_secs(1)).await; // a fourth run would show up now
    let runs = Flaky::runs(&record);
    assert_eq!(runs.iter().map(|r| r.attempt).collect::<Vec<_>>(), [1, 2, 3], "{runs:?}");
    let gaps: Vec<u128> = runs.windows(2).map(|w| w[1].at_ms - w[0].at_ms).collect();
    assert!((1000..2500).contains(&gaps[0]), "first retry after about 1 s: {gaps:?}");
    assert!((2000..3500).contains(&gaps[1]), "second retry after about 2 s: {gaps:?}");
    assert!(gaps[1] > gaps[0], "{gaps:?}");
    assert_eq!(queue.ready_in(&queue.dead_letter_queue()).await, 0, "nothing dead-lettered");
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_job_that_always_fails_ends_in_the_dead_letter_queue_with_its_last_error() {
    let (queue, _worker) = lepus_tests::queue_with_worker("retry-dead").await;
    let client = connect().await;
    let record = temp_file("always");

    // The request's policy overrides the job type's: 4 attempts, 1 s apart.
    let policy = RetryPolicy::attempts(4).backoff(Duration::from_secs(1), 1.0, Duration::from_secs(1));
    let job = Flaky { fail_times: 100, record: record.clone(), ..Flaky::default() };
    let pending = client.submit(Request::new(job).queue(queue.name()).retry(policy)).await.expect("submitted");
    let id = pending.id().clone();
    match pending.output(TIMEOUT).await {
        Err(Error::JobFailed { exception, .. }) => assert_eq!(exception.message(), "run 4 failed on purpose"),
        other => panic!("expected the last failure, got {other:?}"),
    }
    assert_eq!(Flaky::runs(&record).len(), 4);

    let dlq = queue.dead_letter_queue();
    wait_until("the job is dead-lettered", TIMEOUT, || async { queue.ready_in(&dlq).await == 1 }).await;
    let letter = queue.take_all(&dlq).await.pop().expect("one dead letter");
    let headers = letter.properties.headers().clone().unwrap_or_default();
    assert_eq!(header_str(&headers, REASON_HEADER).as_deref(), Some("failed"));
    assert_eq!(header_str(&headers, ERROR_HEADER).as_deref(), Some("run 4 failed on purpose"));
    assert_eq!(lepus_tests::header_u64(&headers, ATTEMPTS_HEADER), Some(4));
    // The original headers travel with it: the job's name and id, its retry count.
    assert_eq!(header_str(&headers, "task").as_deref(), Some("test.flaky"));
    assert_eq!(header_str(&headers, "id").as_deref(), Some(id.as_str()));
    assert_eq!(lepus_tests::header_u64(&headers, "retries"), Some(3));
    client.close().await.expect("closed");
}

#[tokio::test]
async fn fail_now_skips_the_remaining_attempts() {
    let (queue, _worker) = lepus_tests::queue_with_worker("retry-never").await;
    let client = connect().await;
    let record = temp_file("permanent");

    let job = Flaky { fail_times: 100, record: record.clone(), permanent: true, ..Flaky::default() };
    let failed = client.call(Request::new(job).queue(queue.name()), TIMEOUT).await;
    assert!(matches!(failed, Err(Error::JobFailed { .. })), "{failed:?}");
    let dlq = queue.dead_letter_queue();
    wait_until("the job is dead-lettered", TIMEOUT, || async { queue.ready_in(&dlq).await == 1 }).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // a retry would have run by now
    assert_eq!(Flaky::runs(&record).len(), 1, "one run only");
    let letter = queue.take_all(&dlq).await.pop().expect("one dead letter");
    let headers = letter.properties.headers().clone().unwrap_or_default();
    assert_eq!(lepus_tests::header_u64(&headers, ATTEMPTS_HEADER), Some(1));
    client.close().await.expect("closed");
}
