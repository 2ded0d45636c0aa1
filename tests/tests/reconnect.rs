//! Connection cuts lose nothing: a worker whose connection is closed by the broker reconnects and
//! the jobs it was running are run again; a client waiting for a result re-attaches to its reply
//! queue and gets the result. Jobs last 3 s so that the cut (`rabbitmqctl` takes about a second)
//! lands while they run. (Runs in the `broker-disruption` serial group: see .config/nextest.toml.)

use lepus::protocol::Status;
use lepus::{Client, ClientOptions, Request};
use lepus_tests::{TestQueue, WorkerProcess, amqp_url, connect, cut_connections, unique_name, wait_until};
use lepus_worker::demo::{Add, Sleep};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_worker_whose_connection_is_cut_reconnects_and_reruns_its_jobs() {
    let queue = TestQueue::declare("cut-worker").await;
    let worker = WorkerProcess::start(queue.name(), &["--concurrency", "2"]);
    queue.wait_for_consumers(1).await;
    let client = connect().await;
    let mut pending = Vec::new();
    for _ in 0..2 {
        pending.push(client.submit(Request::new(Sleep { seconds: 3.0 }).queue(queue.name())).await.expect("submitted"));
    }
    wait_until("both jobs are running", TIMEOUT, || async { queue.ready().await == 0 }).await;

    // All of the worker's connections (consumers, publisher, batch tracker).
    assert!(cut_connections(&format!("lepus-worker {}", worker.node_name())) >= 1);

    for job in pending {
        let result = job.result(TIMEOUT).await.expect("the job completes after the cut");
        assert_eq!(result.status, Status::Success, "{result:?}");
    }
    queue.wait_for_consumers(1).await;
    assert_eq!(client.call(Request::new(Add { a: 1, b: 1 }).queue(queue.name()), TIMEOUT).await.expect("sum"), 2);
    let log = worker.log();
    assert!(log.contains("reconnecting") && log.contains("the broker will redeliver it"), "{log}");
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_client_whose_connection_is_cut_still_gets_its_result() {
    let queue = TestQueue::declare("cut-client").await;
    let _worker = WorkerProcess::start(queue.name(), &[]);
    queue.wait_for_consumers(1).await;
    let name = unique_name("client");
    let options = ClientOptions { connection_name: name.clone(), ..ClientOptions::default() };
    let client = Client::connect_with(&amqp_url(), options).await.expect("connected");

    let pending = client.submit(Request::new(Sleep { seconds: 3.0 }).queue(queue.name())).await.expect("submitted");
    wait_until("the job is running", TIMEOUT, || async { queue.ready().await == 0 }).await;
    assert!(cut_connections(&name) >= 1);

    assert_eq!(pending.wait(TIMEOUT).await.expect("the result survives the cut"), 3.0);
    // The client's publisher recovers too.
    assert_eq!(client.call(Request::new(Add { a: 2, b: 2 }).queue(queue.name()), TIMEOUT).await.expect("sum"), 4);
    client.close().await.expect("closed");
}
