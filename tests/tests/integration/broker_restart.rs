//! A broker restart loses nothing and stalls nothing: a job waiting in the delay cascade runs
//! afterwards, not before its time; the client's reply consumer re-attaches to its queue; and every
//! worker consumes again within 2 s of the broker accepting connections, however long the broker
//! was away. Restarts the broker, so it runs alone (the `broker-disruption` group in
//! .config/nextest.toml).

use lepus::internal::topology::inspect_queue;
use lepus::{Broker, Request};
use lepus_tests::{Flaky, TestQueue, amqp_url, connect, rabbitmqctl, temp_file};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[tokio::test]
async fn a_delayed_job_survives_a_broker_restart() {
    let (queue, _worker) = lepus_tests::queue_with_worker("restart").await;
    let client = connect().await;
    let record = temp_file("restart");
    let job = Flaky { fail_times: 0, record: record.clone(), ..Flaky::default() };
    let sent_ms = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis();
    let pending =
        client.submit(Request::new(job).queue(queue.name()).delay(Duration::from_secs(15))).await.expect("submitted");

    // The broker goes down while the job waits in the delay cascade.
    rabbitmqctl(&["stop_app"]);
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);

    assert_eq!(pending.output(Duration::from_secs(60)).await.expect("the job ran after the restart"), 1);
    let runs = Flaky::runs(&record);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(
        runs[0].at_ms >= sent_ms + 15_000,
        "ran {} ms after it was sent, before its delay",
        runs[0].at_ms - sent_ms
    );
    client.close().await.expect("closed");
}

#[tokio::test]
async fn workers_consume_again_within_two_seconds_of_the_broker_accepting_connections() {
    const WORKERS: u32 = 3;
    let queue = TestQueue::declare("resume").await;
    let _workers: Vec<_> = (0..WORKERS).map(|_| lepus_tests::start_worker(queue.name(), &[])).collect();
    queue.wait_for_consumers(WORKERS).await;

    // Long enough away for a growing backoff to have grown: the workers try and fail meanwhile.
    rabbitmqctl(&["stop_app"]);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let starting = std::thread::spawn(|| rabbitmqctl(&["start_app"]));
    let accepting = first_accepted_connection().await;
    starting.join().expect("start_app ran");

    let probe = Broker::connect(&amqp_url(), "lepus-tests-probe").await.expect("the broker is back");
    let consuming = loop {
        // Quorum queues may refuse a passive declare for a moment after a restart: not yet.
        let consumers = inspect_queue(&probe, queue.name()).await.ok().flatten().map_or(0, |state| state.consumers);
        if consumers >= WORKERS {
            break Instant::now();
        }
        assert!(accepting.elapsed() < Duration::from_secs(30), "only {consumers} of {WORKERS} workers came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let resumed = consuming.saturating_duration_since(accepting);
    println!("the workers consumed again {resumed:?} after the broker accepted connections");
    assert!(resumed <= Duration::from_secs(2), "took {resumed:?}");
    probe.close().await;
}

/// Polls with fresh connections every 10 ms; the instant the first one opens.
async fn first_accepted_connection() -> Instant {
    let giving_up = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(broker) = Broker::connect(&amqp_url(), "lepus-tests-probe").await {
            let accepted = Instant::now();
            broker.close().await;
            return accepted;
        }
        assert!(Instant::now() < giving_up, "the broker did not come back within a minute");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
