//! A message that crashes every worker that takes it is stopped by the queue's delivery limit
//! and dead-lettered by the broker; then workers serve again.

use lepus::Request;
use lepus::protocol::header_str;
use lepus::topology::WorkQueue;
use lepus_tests::{Abort, TestQueue, WorkerProcess, connect, unique_name, wait_until};
use lepus_worker::demo::Add;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_message_that_kills_its_workers_is_dead_lettered_after_the_delivery_limit() {
    let queue =
        TestQueue::declare_with(WorkQueue::new(unique_name("poison")).expect("name").with_delivery_limit(2)).await;
    let client = connect().await;
    client.enqueue(Request::new(Abort {}).queue(queue.name())).await.expect("enqueued");

    let dlq = queue.dead_letter_queue();
    let mut crashes = 0;
    while queue.ready_in(&dlq).await == 0 {
        assert!(crashes < 6, "still not dead-lettered after {crashes} crashes");
        let mut worker = WorkerProcess::start(queue.name(), &["--delivery-limit", "2"]);
        match worker.wait_exit(TIMEOUT) {
            Some(status) if !status.success() => crashes += 1,
            other => panic!("the worker should have crashed: {other:?}\n{}", worker.log()),
        }
        wait_until("the broker takes the message back", TIMEOUT, || async {
            queue.ready().await == 1 || queue.ready_in(&dlq).await == 1
        })
        .await;
    }
    // Limit 2: delivered three times (two redeliveries), then dead-lettered.
    assert_eq!(crashes, 3);
    let letter = queue.take_all(&dlq).await.pop().expect("the poison message");
    let headers = letter.properties.headers().clone().unwrap_or_default();
    assert_eq!(header_str(&headers, "x-first-death-reason").as_deref(), Some("delivery_limit"));
    assert_eq!(header_str(&headers, "task").as_deref(), Some("test.abort"));

    let _worker = WorkerProcess::start(queue.name(), &["--delivery-limit", "2"]);
    assert_eq!(client.call(Request::new(Add { a: 1, b: 1 }).queue(queue.name()), TIMEOUT).await.expect("sum"), 2);
    client.close().await.expect("closed");
}
