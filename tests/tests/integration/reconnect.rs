//! Connection cuts lose nothing: a worker whose connection is closed by the broker reconnects and
//! the jobs it was running are run again, each answered once; a client waiting for a result
//! re-attaches to its reply queue and gets the result. Jobs last 3 s so that the cut
//! (`rabbitmqctl` takes about a second) lands while they run. (Runs in the `broker-disruption`
//! serial group: see .config/nextest.toml.)

use lepus::protocol::{Arguments, Status, TaskMessage};
use lepus::{Client, ClientOptions, Request};
use lepus_demo::jobs::{Add, Sleep};
use lepus_tests::{
    Flaky, RawReplies, TestQueue, amqp_url, connect, cut_connections, temp_file, unique_name, wait_until,
};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_worker_whose_connection_is_cut_reconnects_and_reruns_its_jobs() {
    let queue = TestQueue::declare("cut-worker").await;
    let worker = lepus_tests::start_worker(queue.name(), &["--concurrency", "2"]);
    queue.wait_for_consumers(1).await;
    let mut replies = RawReplies::open(&queue).await;
    let records: Vec<String> = (0..2).map(|_| temp_file("cut")).collect();
    let mut ids = BTreeSet::new();
    for record in &records {
        // Long enough that the cut (two rabbitmqctl calls, slow on a loaded machine) lands while
        // both still run: with 3 s, a first run finished before the cut once in CI.
        let job = Flaky { record: record.clone(), sleep_ms: 8000, ..Flaky::default() };
        let mut message = TaskMessage::new("test.flaky", Arguments::from_input(&job).expect("encodes"));
        message.reply_to = Some(replies.name().to_owned());
        ids.insert(message.id.to_string());
        queue.publish(&message).await;
    }
    wait_until("both jobs are running", TIMEOUT, || async {
        records.iter().all(|record| Flaky::runs(record).len() == 1)
    })
    .await;

    // All of the worker's connections (consumers, publisher, batch tracker).
    assert!(cut_connections(&format!("lepus-worker {}", lepus_tests::node_name(&worker))) >= 1);

    // The worker consumes again, runs both jobs a second time, and each is answered once, by the
    // second run: the first run's result went nowhere, since its delivery died with the channel.
    let results = replies.take(2, TIMEOUT).await;
    assert_eq!(results.len(), 2, "one result per job: {results:?}");
    assert_eq!(results.iter().map(|r| r.task_id.clone()).collect::<BTreeSet<_>>(), ids);
    for result in &results {
        assert_eq!((result.status, &result.result), (Status::Success, &json!(2)), "{result:?}");
    }
    for record in &records {
        assert_eq!(Flaky::runs(record).len(), 2, "ran before the cut and again after it");
    }
    queue.wait_for_consumers(1).await;
    let client = connect().await;
    assert_eq!(client.call(Request::new(Add { a: 1, b: 1 }).queue(queue.name()), TIMEOUT).await.expect("sum"), 2);
    client.close().await.expect("closed");
    replies.delete().await;
}

#[tokio::test]
async fn a_client_whose_connection_is_cut_still_gets_its_result() {
    let (queue, _worker) = lepus_tests::queue_with_worker("cut-client").await;
    let name = unique_name("client");
    let options = ClientOptions::default().connection_name(name.as_str());
    let client = Client::connect_with(&amqp_url(), options).await.expect("connected");

    let pending = client.submit(Request::new(Sleep { seconds: 3.0 }).queue(queue.name())).await.expect("submitted");
    wait_until("the job is running", TIMEOUT, || async { queue.ready().await == 0 }).await;
    assert!(cut_connections(&name) >= 1);

    assert_eq!(pending.output(TIMEOUT).await.expect("the result survives the cut"), 3.0);
    // The client's publisher recovers too.
    assert_eq!(client.call(Request::new(Add { a: 2, b: 2 }).queue(queue.name()), TIMEOUT).await.expect("sum"), 4);
    client.close().await.expect("closed");
}
