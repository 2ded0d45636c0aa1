//! A worker acks runs of finished deliveries with one `multiple` ack. These tests hold it to what
//! that must never break: a job still running is never covered by an ack (a SIGKILL gives it back
//! to the queue), and jobs finishing in any order are each acked once (no channel error, no
//! redelivery, one result per job, nothing left unacked).

use lepus::lapin::BasicProperties;
use lepus::protocol::{Arguments, Status, TaskMessage};
use lepus_tests::{RawReplies, TestQueue, consumers_of, wait_until};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::time::Duration;

fn job(task: &str, kwargs: Value, reply_to: &str) -> TaskMessage {
    let kwargs: Map<String, Value> = kwargs.as_object().cloned().unwrap_or_default();
    let mut message = TaskMessage::new(task, Arguments { args: vec![], kwargs });
    message.reply_to = Some(reply_to.to_owned());
    message
}

/// Publishes the messages one after the other, so that their delivery tags follow this order.
async fn publish_in_order(queue: &TestQueue, messages: &[TaskMessage]) {
    for message in messages {
        queue.publish(message).await;
    }
}

#[tokio::test]
async fn a_running_job_is_never_covered_by_the_acks_of_jobs_that_finished_after_it() {
    let queue = TestQueue::declare("ack-gap").await;
    let mut worker = lepus_tests::start_worker(queue.name(), &["--concurrency", "16"]);
    queue.wait_for_consumers(1).await;
    let mut replies = RawReplies::open(&queue).await;

    // Delivery tag 1 sleeps; the 300 jobs after it finish (and are acked) while it runs.
    let sleeper = job("demo.sleep", json!({"seconds": 30.0}), replies.name());
    let mut messages = vec![sleeper.clone()];
    messages.extend((0..300).map(|i| job("demo.echo", json!({"i": i}), replies.name())));
    publish_in_order(&queue, &messages).await;
    let results = replies.take(300, Duration::from_secs(30)).await;
    assert_eq!(results.len(), 300, "each quick job has exactly one result");
    assert!(results.iter().all(|r| r.task_id != sleeper.id.as_str()), "the sleeper cannot have finished");

    // Killed while the sleeper runs: it alone comes back, so no ack covered it.
    worker.kill();
    wait_until("the killed worker's consumer is gone", Duration::from_secs(10), || async {
        queue.consumers().await == 0
    })
    .await;
    wait_until("the sleeper is back in the queue", Duration::from_secs(10), || async { queue.ready().await == 1 })
        .await;
    let back = queue.take_all(queue.name()).await;
    let ids: Vec<_> = back.iter().filter_map(|d| header_id(&d.properties)).collect();
    assert_eq!(ids, [sleeper.id.to_string()], "only the running job was unacked");
    replies.delete().await;
}

fn header_id(properties: &BasicProperties) -> Option<String> {
    let headers = properties.headers().as_ref()?;
    match headers.inner().get("id")? {
        lepus::lapin::types::AMQPValue::LongString(id) => Some(id.to_string()),
        _ => None,
    }
}

#[tokio::test]
async fn jobs_finishing_in_any_order_are_each_acked_once() {
    const JOBS: usize = 600;
    let queue = TestQueue::declare("ack-order").await;
    let _worker = lepus_tests::start_worker(queue.name(), &["--concurrency", "32"]);
    queue.wait_for_consumers(1).await;
    let consumer = consumers_of(queue.name());
    let mut replies = RawReplies::open(&queue).await;

    // Sleeps of 0 to 40 ms in a scrambled order, failures (dead-lettered with a FAILURE result)
    // and undecodable bodies (dead-lettered, no result) in between.
    let mut messages = Vec::new();
    let mut expected = HashMap::new();
    for i in 0..JOBS {
        let message = if i % 10 == 3 {
            job("demo.fail", json!({"message": format!("failure {i}")}), replies.name())
        } else {
            job("demo.sleep", json!({"seconds": ((i * 7919) % 41) as f64 / 1000.0}), replies.name())
        };
        let status = if i % 10 == 3 { Status::Failure } else { Status::Success };
        expected.insert(message.id.to_string(), status);
        messages.push(message);
    }
    let garbage = 20;
    for i in 0..JOBS + garbage {
        if i % 31 == 0 && i / 31 < garbage {
            queue.publish_raw(b"\x00 not json", BasicProperties::default().with_delivery_mode(2)).await;
        }
        if let Some(message) = messages.get(i) {
            queue.publish(message).await;
        }
    }

    let results = replies.take(JOBS, Duration::from_secs(60)).await;
    assert_eq!(results.len(), JOBS, "each job has exactly one result");
    for result in &results {
        assert_eq!(expected.remove(&result.task_id), Some(result.status), "result {result:?} unexpected or repeated");
    }
    wait_until("the work queue is empty and nothing is unacked", Duration::from_secs(20), || async {
        queue.ready().await == 0 && queue.unacked() == 0
    })
    .await;
    let dead = queue.ready_in(&queue.dead_letter_queue()).await as usize;
    assert_eq!(dead, JOBS / 10 + garbage, "failures and garbage are dead-lettered once each");
    // An ack the broker refused (an unknown delivery tag) would have closed the channel, and the
    // worker would have consumed again on a new one.
    assert_eq!(consumers_of(queue.name()), consumer, "the worker consumed on one channel throughout");
    replies.delete().await;
}

#[tokio::test]
async fn a_job_whose_reply_queue_is_gone_is_acked_once_and_its_result_dropped() {
    let queue = TestQueue::declare("ack-no-replies").await;
    let _worker = lepus_tests::start_worker(queue.name(), &[]);
    queue.wait_for_consumers(1).await;
    let mut replies = RawReplies::open(&queue).await;

    // The first job's caller is gone (no queue of that name); the second's waits for its result.
    let orphan = job("demo.echo", json!({"i": 1}), &lepus_tests::unique_name("gone-replies"));
    let answered = job("demo.echo", json!({"i": 2}), replies.name());
    publish_in_order(&queue, &[orphan, answered.clone()]).await;
    let results = replies.take(1, Duration::from_secs(30)).await;
    assert_eq!(results.len(), 1, "the job whose caller waits got its result");
    assert_eq!(results[0].task_id, answered.id.as_str());
    wait_until("both jobs acked", Duration::from_secs(10), || async {
        queue.ready().await == 0 && queue.unacked() == 0
    })
    .await;
    assert_eq!(queue.ready_in(&queue.dead_letter_queue()).await, 0, "the orphan is not a dead letter");
    replies.delete().await;
}
