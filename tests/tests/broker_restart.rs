//! A broker restart loses nothing: a job waiting in the delay cascade runs afterwards, the worker
//! reconnects, and the client's reply consumer re-attaches to its queue. Restarts the broker, so
//! it runs alone (the `broker-disruption` group in .config/nextest.toml).

use lepus::Request;
use lepus_tests::{Flaky, TestQueue, WorkerProcess, connect, rabbitmqctl, temp_file};
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_delayed_job_survives_a_broker_restart() {
    let queue = TestQueue::declare("restart").await;
    let worker = WorkerProcess::start(queue.name(), &[]);
    queue.wait_for_consumers(1).await;
    let client = connect().await;
    let record = temp_file("restart");
    let job = Flaky { fail_times: 0, record: record.clone(), permanent: false };
    let sent = Instant::now();
    let pending =
        client.submit(Request::new(job).queue(queue.name()).delay(Duration::from_secs(15))).await.expect("submitted");

    rabbitmqctl(&["stop_app"]);
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
    // The broker went down while the job waited in the delay cascade (it stopped right after the
    // enqueue). A restart can take a while; the job must be neither lost nor run early.
    if sent.elapsed() < Duration::from_secs(15) {
        assert!(Flaky::runs(&record).is_empty(), "ran before its delay");
    }

    assert_eq!(pending.wait(Duration::from_secs(60)).await.expect("the job ran after the restart"), 1);
    let runs = Flaky::runs(&record);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(sent.elapsed() >= Duration::from_secs(15));
    assert!(worker.log().contains("reconnecting"), "{}", worker.log());
    client.close().await.expect("closed");
}
