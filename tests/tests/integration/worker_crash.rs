//! A worker killed mid-job loses nothing: the broker redelivers its unacked jobs to another worker.

use lepus::Request;
use lepus::protocol::Status;
use lepus_demo::jobs::Sleep;
use lepus_tests::{TestQueue, connect, wait_until};
use std::time::Duration;

#[tokio::test]
async fn sigkill_during_sleep_jobs_loses_none_of_them() {
    let queue = TestQueue::declare("sigkill").await;
    let mut first = lepus_tests::start_worker(queue.name(), &["--concurrency", "4"]);
    queue.wait_for_consumers(1).await;
    let client = connect().await;
    let mut pending = Vec::new();
    for _ in 0..4 {
        pending.push(client.submit(Request::new(Sleep { seconds: 2.0 }).queue(queue.name())).await.expect("submitted"));
    }
    // All four were delivered to the first worker (its prefetch is 4) and are running there.
    wait_until("the first worker holds all four jobs", Duration::from_secs(10), || async { queue.ready().await == 0 })
        .await;

    let second = lepus_tests::start_worker(queue.name(), &["--concurrency", "4"]);
    queue.wait_for_consumers(2).await;
    first.kill();

    for job in pending {
        let result = job.result_message(Duration::from_secs(30)).await.expect("every job completes");
        assert_eq!(result.status, Status::Success, "{result:?}");
        assert_eq!(
            result.worker.as_deref(),
            Some(lepus_tests::node_name(&second).as_str()),
            "the surviving worker ran it"
        );
    }
    assert_eq!(queue.ready().await, 0);
    client.close().await.expect("closed");
}
