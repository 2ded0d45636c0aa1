//! `Client::enqueue_many`: every job lands exactly once, and a job that cannot be sent is an
//! error for that job alone.

use lepus::{Error, JobId, Request};
use lepus_demo::jobs::Add;
use lepus_tests::{TestQueue, connect, unique_name, wait_until};
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_land_in_their_queue_exactly_once() {
    let queue = TestQueue::declare("bulk").await;
    let client = connect().await;
    let requests = (0..10_000).map(|a| Request::new(Add { a, b: 1 }).queue(queue.name()));
    let sent = client.enqueue_many(requests).await;
    assert_eq!(sent.len(), 10_000);
    let ids: HashSet<JobId> = sent.into_iter().map(|sent| sent.expect("enqueued")).collect();
    assert_eq!(ids.len(), 10_000, "every job has an id of its own");
    assert_eq!(queue.ready().await, 10_000);
    let landed = queue.take_all(queue.name()).await;
    assert_eq!(landed.len(), 10_000);
    let landed: HashSet<JobId> = landed.iter().map(job_id).collect();
    assert_eq!(landed, ids, "each job is in the queue once, under the id it was given");
}

#[tokio::test]
async fn a_job_for_a_missing_queue_fails_alone_and_the_others_are_sent() {
    let queue = TestQueue::declare("bulk-mixed").await;
    let missing = unique_name("missing");
    let client = connect().await;
    let to = |i: i64| if i == 7 { missing.clone() } else { queue.name().to_owned() };
    let sent = client.enqueue_many((0..20).map(|a| Request::new(Add { a, b: 1 }).queue(to(a)))).await;
    assert_eq!(sent.len(), 20);
    let mut ids = HashSet::new();
    for (index, result) in sent.into_iter().enumerate() {
        match result {
            Err(Error::Unroutable { routing_key, .. }) if index == 7 => assert_eq!(routing_key, missing),
            Ok(id) if index != 7 => assert!(ids.insert(id)),
            other => panic!("job {index}: unexpected {other:?}"),
        }
    }
    let landed: HashSet<JobId> = queue.take_all(queue.name()).await.iter().map(job_id).collect();
    assert_eq!(landed, ids, "the 19 others are in the queue");
}

#[tokio::test]
async fn delayed_and_invalid_jobs_are_answered_in_place() {
    let queue = TestQueue::declare("bulk-delayed").await;
    let missing = unique_name("missing");
    let client = connect().await;
    let later = Duration::from_secs(2);
    let requests = vec![
        Request::new(Add { a: 0, b: 1 }).queue(queue.name()).delay(later),
        Request::new(Add { a: 1, b: 1 }).queue(missing.as_str()).delay(later),
        Request::new(Add { a: 2, b: 1 }).queue("amq.reserved"),
        Request::new(Add { a: 3, b: 1 }).queue(queue.name()),
    ];
    let sent = client.enqueue_many(requests).await;
    assert!(sent[0].is_ok(), "{:?}", sent[0]);
    assert!(matches!(&sent[1], Err(Error::Unroutable { routing_key, .. }) if *routing_key == missing), "{:?}", sent[1]);
    assert!(matches!(sent[2], Err(Error::InvalidName { .. })), "{:?}", sent[2]);
    let undelayed = queue.take_all(queue.name()).await;
    assert_eq!(undelayed.iter().map(job_id).collect::<Vec<_>>(), [sent[3].as_ref().expect("enqueued").clone()]);
    wait_until("the delayed job arrives", Duration::from_secs(30), || async { queue.ready().await == 1 }).await;
    let delayed = queue.take_all(queue.name()).await;
    assert_eq!(delayed.iter().map(job_id).collect::<Vec<_>>(), [sent[0].as_ref().expect("enqueued").clone()]);
}

/// The id of the job a delivery carries (Celery's `id` header).
fn job_id(delivery: &lepus::lapin::message::Delivery) -> JobId {
    let headers = delivery.properties.headers().as_ref().expect("headers");
    let id = lepus::internal::header_str(headers, "id").expect("an id header");
    JobId::from(id.into_owned())
}
