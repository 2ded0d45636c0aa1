//! Jobs round-trip: typed jobs sent from Rust run on worker processes and their typed results
//! come back; many jobs spread over several workers, each with exactly one result.

use lepus::Request;
use lepus::protocol::{Arguments, ResultMessage, Status, TaskMessage};
use lepus_demo::jobs::Add;
use lepus_tests::{RawReplies, TestQueue, WordCount, WordStats, connect};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_user_defined_typed_job_round_trips_through_a_worker() {
    let (queue, _worker) = lepus_tests::queue_with_worker("typed").await;
    let client = connect().await;

    let stats = client
        .call(Request::new(WordCount { text: "the quick brown fox".into() }).queue(queue.name()), TIMEOUT)
        .await
        .expect("word count result");
    assert_eq!(stats, WordStats { words: 4, chars: 19 });

    // The handle form: submit now, await later.
    let pending = client.submit(Request::new(Add { a: 2, b: 40 }).queue(queue.name())).await.expect("submitted");
    let id = pending.id().clone();
    let result = pending.result_message(TIMEOUT).await.expect("a result");
    assert_eq!((result.task_id.as_str(), &result.result), (id.as_str(), &json!(42)), "the handle's id is the job's");
    client.close().await.expect("closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_jobs_through_three_workers_get_exactly_one_result_each() {
    const JOBS: i64 = 1000;
    let queue = TestQueue::declare("spread").await;
    let workers: Vec<_> = (0..3).map(|_| lepus_tests::start_worker(queue.name(), &["--concurrency", "8"])).collect();
    queue.wait_for_consumers(3).await;

    // Our own reply queue, read raw, so duplicates would be seen rather than dropped.
    let mut replies = RawReplies::open(&queue).await;

    let mut sent = HashMap::new();
    let mut publishing = tokio::task::JoinSet::new();
    let queue = std::sync::Arc::new(queue);
    for i in 0..JOBS {
        let mut message =
            TaskMessage::new("demo.add", Arguments { args: vec![json!(i), json!(i)], kwargs: Default::default() });
        message.reply_to = Some(replies.name().to_owned());
        sent.insert(message.id.to_string(), 2 * i);
        let queue = std::sync::Arc::clone(&queue);
        publishing.spawn(async move { queue.publish(&message).await });
    }
    while let Some(published) = publishing.join_next().await {
        published.expect("publish task");
    }

    let all = replies.take(sent.len(), Duration::from_secs(60)).await;
    assert_eq!(all.len(), sent.len(), "each job has exactly one result");
    let mut results: HashMap<String, Vec<ResultMessage>> = HashMap::new();
    for result in all {
        results.entry(result.task_id.clone()).or_default().push(result);
    }
    let mut per_worker: HashMap<String, usize> = HashMap::new();
    for (id, expected) in &sent {
        let [result] = results[id].as_slice() else { panic!("job {id} has {} results", results[id].len()) };
        assert_eq!(result.status, Status::Success, "{result:?}");
        assert_eq!(result.result, json!(expected));
        *per_worker.entry(result.worker.clone().expect("worker named")).or_default() += 1;
    }
    for worker in &workers {
        let ran = per_worker.get(&lepus_tests::node_name(worker)).copied().unwrap_or(0);
        assert!(ran > 0, "worker {} ran no job: {per_worker:?}", lepus_tests::node_name(worker));
    }
    assert_eq!(per_worker.len(), 3, "{per_worker:?}");
    assert_eq!(queue.ready().await, 0);
    replies.delete().await;
}
