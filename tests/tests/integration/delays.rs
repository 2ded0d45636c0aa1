//! Delays live in the broker: delayed jobs start on time (1/8 s resolution), wait in RabbitMQ while
//! no worker runs, messages arriving before their `eta` go back to the cascade instead of being
//! held by a worker, and expired jobs are not run.

use chrono::{DateTime, Utc};
use lepus::protocol::{Arguments, ResultMessage, Status, TaskMessage};
use lepus::{Error, Request, RetryPolicy};
use lepus_demo::jobs::{Add, Echo, Sleep};
use lepus_tests::{Flaky, TestQueue, connect, temp_file, wait_until};
use serde_json::json;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(30);

fn echo(tag: &str) -> Echo {
    Echo(json!({ "tag": tag }).as_object().cloned().unwrap_or_default())
}

/// When the job ran: the result's `date_done` (an echo finishes the moment it starts).
fn ran_at(result: &ResultMessage) -> DateTime<Utc> {
    let done = result.date_done.as_deref().expect("date_done");
    DateTime::parse_from_rfc3339(done).expect("ISO 8601").with_timezone(&Utc)
}

#[tokio::test]
async fn delayed_jobs_start_after_their_delay_and_within_a_second_and_a_half() {
    let (queue, _worker) = lepus_tests::queue_with_worker("delays").await;
    let client = connect().await;

    let mut sent = Vec::new();
    for seconds in [3, 1, 2, 0] {
        let at = Utc::now();
        let request = Request::new(echo(&seconds.to_string())).queue(queue.name()).delay(Duration::from_secs(seconds));
        sent.push((seconds, at, client.submit(request).await.expect("submitted")));
    }
    for (seconds, at, pending) in sent {
        let result = pending.result_message(TIMEOUT).await.expect("a result");
        assert_eq!(result.status, Status::Success);
        let waited = (ran_at(&result) - at).to_std().expect("ran after it was sent");
        let delay = Duration::from_secs(seconds);
        assert!(waited >= delay, "{seconds} s job ran after {waited:?}");
        let slack = if seconds == 0 { Duration::from_millis(500) } else { Duration::from_millis(1500) };
        assert!(waited <= delay + slack, "{seconds} s job ran after {waited:?}");
    }
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_delayed_job_waits_in_the_broker_until_a_worker_starts() {
    let queue = TestQueue::declare("no-worker").await;
    let client = connect().await;
    let sent = Instant::now();
    let pending = client
        .submit(Request::new(Add { a: 20, b: 22 }).queue(queue.name()).delay(Duration::from_secs(2)))
        .await
        .expect("submitted");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(queue.ready().await, 0, "still in the delay cascade");
    wait_until("the job reaches its queue", TIMEOUT, || async { queue.ready().await == 1 }).await;
    assert!(sent.elapsed() >= Duration::from_secs(2));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let _worker = lepus_tests::start_worker(queue.name(), &[]);
    assert_eq!(pending.output(TIMEOUT).await.expect("the sum"), 42);
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_message_with_a_future_eta_is_not_held_by_the_worker() {
    let queue = TestQueue::declare("eta").await;
    let _worker = lepus_tests::start_worker(queue.name(), &["--concurrency", "1"]);
    queue.wait_for_consumers(1).await;
    let client = connect().await;

    // As an older Celery client sends it: straight to the queue, with a future eta header.
    let eta = Utc::now() + chrono::TimeDelta::seconds(7);
    let mut early =
        TaskMessage::new("demo.add", Arguments { args: vec![json!(1), json!(1)], kwargs: Default::default() });
    early.eta = Some(eta);
    queue.publish(&early).await;

    // The worker's only slot is free: another job runs at once.
    let started = Instant::now();
    let quick = client.call(Request::new(Add { a: 2, b: 2 }).queue(queue.name()), TIMEOUT).await;
    assert_eq!(quick.expect("the quick job"), 4);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

    // The broker reports nothing unacked on the queue (its quorum metrics refresh every ~5 s).
    tokio::time::sleep(Duration::from_millis(5500)).await;
    assert_eq!(queue.unacked(), 0, "the eta message is not held by the worker");
    assert_eq!(queue.ready().await, 0);
    client.close().await.expect("closed");
}

#[tokio::test]
async fn expired_jobs_are_not_run_and_say_so() {
    let queue = TestQueue::declare("expires").await;
    let client = connect().await;
    let record = temp_file("expired");
    let job = Flaky { fail_times: 0, record: record.clone(), ..Flaky::default() };
    let pending = client
        .submit(Request::new(job).queue(queue.name()).expires_in(Duration::from_millis(500)))
        .await
        .expect("submitted");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let _worker = lepus_tests::start_worker(queue.name(), &[]);
    match pending.output(TIMEOUT).await {
        Err(Error::JobRevoked { exception, .. }) => {
            assert_eq!(exception.exc_type, "TaskRevokedError");
            assert!(exception.message().starts_with("expired"), "{}", exception.message());
        }
        other => panic!("expected a revoked job, got {other:?}"),
    }
    assert!(Flaky::runs(&record).is_empty(), "the job did not run");
    assert_eq!(queue.ready().await, 0, "and was acked");
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_worker_under_delayed_and_retried_jobs_holds_no_more_than_its_concurrency() {
    const CONCURRENCY: u64 = 2;
    let queue = TestQueue::declare("bounded").await;
    let _worker = lepus_tests::start_worker(queue.name(), &["--concurrency", &CONCURRENCY.to_string()]);
    queue.wait_for_consumers(1).await;
    let client = connect().await;

    let mut pending = Vec::new();
    for i in 0..20u64 {
        let mut early =
            TaskMessage::new("demo.add", Arguments { args: vec![json!(i), json!(0)], kwargs: Default::default() });
        early.eta = Some(Utc::now() + chrono::TimeDelta::seconds(2 + (i % 4) as i64));
        queue.publish(&early).await;
        let record = temp_file("bounded");
        let flaky = Flaky { fail_times: 1, record, ..Flaky::default() };
        let retry = RetryPolicy::attempts(2).backoff(Duration::from_secs(1), 1.0, Duration::from_secs(1));
        pending.push(client.submit(Request::new(flaky).queue(queue.name()).retry(retry)).await.expect("submitted"));
        let sleep = Request::new(Sleep { seconds: 0.2 }).queue(queue.name()).delay(Duration::from_secs(i % 3));
        client.enqueue(sleep).await.expect("enqueued");
    }
    let mut most = 0;
    let watching = Instant::now();
    while watching.elapsed() < Duration::from_secs(12) {
        most = most.max(queue.unacked());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(most <= CONCURRENCY, "the worker held {most} unacked messages");
    for job in pending {
        assert_eq!(job.output(TIMEOUT).await.expect("retried to success"), 2);
    }
    wait_until("every job ran", TIMEOUT, || async { queue.ready().await == 0 }).await;
    client.close().await.expect("closed");
}

#[tokio::test]
async fn enqueue_at_takes_a_time_in_any_zone() {
    let (queue, _worker) = lepus_tests::queue_with_worker("at").await;
    let client = connect().await;
    let zone = chrono::FixedOffset::east_opt(5 * 3600 + 1800).expect("UTC+05:30");
    let at = (Utc::now() + chrono::TimeDelta::seconds(2)).with_timezone(&zone);
    let request = Request::new(echo("at")).queue(queue.name()).at(at);
    let result = client.submit(request).await.expect("submitted").result_message(TIMEOUT).await.expect("a result");
    let late = (ran_at(&result) - at.with_timezone(&Utc)).to_std().expect("ran no earlier than its time");
    assert!(late <= Duration::from_millis(1500), "ran {late:?} after its time");

    // The client's shorthand does the same: the job runs at its time, in any zone, not before.
    let record = temp_file("at");
    let at = (Utc::now() + chrono::TimeDelta::seconds(2)).with_timezone(&zone);
    let job = Flaky { record: record.clone(), ..Flaky::default() };
    client.enqueue_at(Request::new(job).queue(queue.name()), at).await.expect("enqueued");
    wait_until("the job ran", TIMEOUT, || async { !Flaky::runs(&record).is_empty() }).await;
    let at_ms = u128::try_from(at.timestamp_millis()).expect("after 1970");
    let ran_ms = Flaky::runs(&record)[0].at_ms;
    assert!(
        (at_ms..=at_ms + 1500).contains(&ran_ms),
        "ran {} ms after its time",
        i128::try_from(ran_ms).unwrap_or_default() - i128::try_from(at_ms).unwrap_or_default()
    );
    client.close().await.expect("closed");
}

/// Makes sure the broker has the policy the README asks for (as `.ci/run` sets it).
fn ensure_unroutable_delayed_policy() {
    let [name, pattern, definition] = lepus::internal::topology::UNROUTABLE_DELAYED_POLICY;
    lepus_tests::rabbitmqctl(&["set_policy", "--apply-to", "exchanges", name, pattern, definition]);
}

/// Messages kept in `lepus.delayed.unroutable` now.
async fn kept_aside(broker: &lepus::Broker) -> u32 {
    let kept = lepus::internal::topology::UNROUTABLE_DELAYED;
    lepus::internal::topology::inspect_queue(broker, kept).await.expect("inspected").map_or(0, |state| state.messages)
}

/// Waits until `lepus.delayed.unroutable` holds `orphans` more than `before` (or is full).
async fn wait_kept_aside(broker: &lepus::Broker, before: u32, orphans: u32) {
    let full = u32::try_from(lepus::internal::topology::UNROUTABLE_DELAYED_KEPT).unwrap_or(u32::MAX);
    let expected = (before + orphans).min(full);
    wait_until("the orphans are kept aside", TIMEOUT, || async { kept_aside(broker).await >= expected }).await;
}

/// More orphans than the broker's dead-letter worker holds unconfirmed (32): enough to stall a
/// level of an at-least-once cascade for good if they had nowhere to go.
const ORPHANS: u32 = 40;

#[tokio::test]
async fn delayed_jobs_whose_queue_is_gone_are_kept_aside_and_do_not_stall_the_cascade() {
    // No broker policy needed: Lepus's delivery exchange names its alternate exchange itself.
    let client = connect().await;
    let before = kept_aside(client.broker()).await;
    let gone = TestQueue::declare("delay-gone").await;
    for i in 0..ORPHANS {
        let request = Request::new(echo(&i.to_string())).queue(gone.name()).delay(Duration::from_millis(300));
        client.enqueue(request).await.expect("enqueued");
    }
    drop(gone); // deleted while its jobs wait in the cascade's bottom level

    // A job due after the orphans went through that level still arrives on time.
    let (queue, _worker) = lepus_tests::queue_with_worker("delay-after-gone").await;
    let sent = Utc::now();
    let pending = client
        .submit(Request::new(echo("after")).queue(queue.name()).delay(Duration::from_secs(3)))
        .await
        .expect("submitted");
    let result = pending.result_message(TIMEOUT).await.expect("the later delayed job ran");
    let waited = (ran_at(&result) - sent).to_std().expect("ran after it was sent");
    assert!(waited <= Duration::from_millis(4500), "ran after {waited:?}");
    wait_kept_aside(client.broker(), before, ORPHANS).await;
    client.close().await.expect("closed");
}

/// Publishes `message` for `queue` into kombu's cascade as a Celery 5.5 client does: to the
/// level of the delay's highest bit, with its 28 bits and the queue as the routing key.
async fn publish_the_celery_way(via: &TestQueue, queue: &str, seconds: u32, message: &TaskMessage) {
    let (body, properties) = message.encode().expect("encodes");
    let bits: Vec<String> = (0..28).rev().map(|bit| (seconds >> bit & 1).to_string()).collect();
    let key = format!("{}.{queue}", bits.join("."));
    let exchange = format!("celery_delayed_{}", 31 - seconds.leading_zeros());
    let outgoing = lepus::internal::Outgoing { exchange: &exchange, routing_key: &key, body: &body, properties };
    lepus::internal::Publisher::new(via.broker().clone(), TIMEOUT).publish(outgoing).await.expect("published");
}

#[tokio::test]
async fn celery_delayed_jobs_whose_queue_is_gone_are_kept_aside_by_the_broker_policy() {
    ensure_unroutable_delayed_policy();
    let gone = TestQueue::declare("celery-delay-gone").await;
    let before = kept_aside(gone.broker()).await;
    for i in 0..ORPHANS {
        let message = TaskMessage::new("demo.echo", Arguments::positional([i]));
        publish_the_celery_way(&gone, gone.name(), 1, &message).await;
    }
    let live = TestQueue::declare("celery-delay-after-gone").await;
    drop(gone); // deleted while its jobs wait in level 0 of kombu's cascade

    // A Celery job due after the orphans went through level 0 still reaches its queue on time.
    let sent = Instant::now();
    publish_the_celery_way(&live, live.name(), 3, &TaskMessage::new("demo.echo", Arguments::default())).await;
    wait_until("the later Celery job reaches its queue", TIMEOUT, || async { live.ready().await == 1 }).await;
    let waited = sent.elapsed();
    assert!((Duration::from_secs(3)..=Duration::from_millis(4500)).contains(&waited), "arrived after {waited:?}");
    wait_kept_aside(live.broker(), before, ORPHANS).await;
}

#[tokio::test]
async fn delays_are_not_rounded_up_to_whole_seconds() {
    let queue = TestQueue::declare("sub-second").await;
    let client = connect().await;
    for millis in [300_u64, 1_200] {
        let delay = Duration::from_millis(millis);
        let sent = Instant::now();
        client.enqueue(Request::new(Add { a: 1, b: 1 }).queue(queue.name()).delay(delay)).await.expect("enqueued");
        let mut arrived = None;
        while sent.elapsed() < delay + Duration::from_secs(5) {
            if queue.ready().await == 1 {
                arrived = Some(sent.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let arrived = arrived.unwrap_or_else(|| panic!("the {millis} ms job never arrived"));
        assert!(arrived >= delay, "the {millis} ms job arrived after {arrived:?}");
        // A tick of rounding, the broker's expiry and dead-lettering, and the polling: far less
        // than the whole second that the earlier cascade rounded to.
        assert!(arrived <= delay + Duration::from_millis(600), "the {millis} ms job arrived after {arrived:?}");
        assert_eq!(queue.take_all(queue.name()).await.len(), 1);
    }
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_delayed_job_reaches_a_queue_another_program_declared_without_binding_it() {
    // Declared as a Celery app or an operator would: a plain classic queue, bound to no cascade.
    let mut cleanup = lepus_tests::Cleanup::default();
    let name = lepus_tests::unique_name("foreign");
    cleanup.queue(name.clone());
    let client = connect().await;
    let channel = client.broker().channel().await.expect("channel");
    let durable = lepus::lapin::options::QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(name.as_str().into(), durable, Default::default()).await.expect("declared");

    let sent = Instant::now();
    client.enqueue_in(Request::new(Add { a: 2, b: 3 }).queue(&name), Duration::from_secs(1)).await.expect("enqueued");
    let passive = lepus::lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    wait_until("the delayed job reaches the foreign queue", TIMEOUT, || async {
        channel.queue_declare(name.as_str().into(), passive, Default::default()).await.expect("exists").message_count()
            == 1
    })
    .await;
    assert!(sent.elapsed() >= Duration::from_secs(1), "arrived after {:?}", sent.elapsed());
    client.close().await.expect("closed");
}
