//! Batches: completion is tracked in the broker, progress reads are consistent midway, and the
//! callback runs exactly once with the batch's summary, even when a worker dies mid-batch.

use lepus::internal::topology::batch_progress_queue;
use lepus::lapin::options::BasicGetOptions;
use lepus::{Batch, BatchProgress, Error, JobId, Request};
use lepus_demo::jobs::{Fail, Sleep};
use lepus_tests::{Cleanup, Remember, TestQueue, connect, temp_file, wait_until};
use std::collections::BTreeSet;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

fn assert_consistent(progress: &BatchProgress, total: usize) {
    assert_eq!(progress.total, total);
    assert_eq!(progress.done + progress.failed + progress.pending, total, "{progress:?}");
    assert_eq!(progress.failed_jobs.len(), progress.failed, "{progress:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_500_with_10_failures_calls_back_once_with_its_summary() {
    let queue = TestQueue::declare("batch").await;
    let _workers: Vec<_> = (0..2).map(|_| lepus_tests::start_worker(queue.name(), &["--concurrency", "4"])).collect();
    queue.wait_for_consumers(2).await;
    let client = connect().await;
    let calls = temp_file("callback");

    let mut batch = Batch::new()
        .callback(Request::new(Remember { path: calls.clone(), batch: Default::default() }).queue(queue.name()));
    for i in 0..500 {
        batch = if i % 50 == 7 {
            batch.job(Request::new(Fail { message: format!("job {i} fails") }).queue(queue.name()))
        } else {
            batch.job(Request::new(Sleep { seconds: 0.02 }).queue(queue.name()))
        };
    }
    let id = client.enqueue_batch(batch).await.expect("sent");
    let mut cleanup = Cleanup::default();
    cleanup.queue(batch_progress_queue(&id));

    let mut midway = 0;
    let last = loop {
        let progress = client.batch_progress(&id).await.expect("progress");
        assert_consistent(&progress, 500);
        if progress.complete {
            break progress;
        }
        if progress.pending > 0 && progress.pending < 500 {
            midway += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(midway > 0, "no progress read fell midway");
    assert_eq!((last.done, last.failed, last.pending), (490, 10, 0));
    let expected: BTreeSet<JobId> =
        (0..500).filter(|i| i % 50 == 7).map(|i| JobId::from(format!("{id}.{i}"))).collect();
    assert_eq!(last.failed_jobs.iter().cloned().collect::<BTreeSet<_>>(), expected);

    wait_until("the callback ran", TIMEOUT, || async { !Remember::calls(&calls).is_empty() }).await;
    tokio::time::sleep(Duration::from_secs(1)).await; // a second call would show up now
    let summaries = Remember::calls(&calls);
    assert_eq!(summaries.len(), 1, "the callback ran {} times", summaries.len());
    assert_eq!(summaries[0]["done"], 490);
    assert_eq!(summaries[0]["failed"], 10);
    assert_eq!(summaries[0]["total"], 500);
    assert_eq!(summaries[0]["id"], id.as_str());
    assert_eq!(summaries[0]["failed_jobs"].as_array().map(Vec::len), Some(10));
    client.close().await.expect("closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_does_not_double_count_or_double_call() {
    let queue = TestQueue::declare("batch-kill").await;
    let mut first = lepus_tests::start_worker(queue.name(), &["--concurrency", "4"]);
    let _second = lepus_tests::start_worker(queue.name(), &["--concurrency", "4"]);
    queue.wait_for_consumers(2).await;
    let client = connect().await;
    let calls = temp_file("callback");

    let mut batch = Batch::new()
        .callback(Request::new(Remember { path: calls.clone(), batch: Default::default() }).queue(queue.name()));
    for _ in 0..200 {
        batch = batch.job(Request::new(Sleep { seconds: 0.05 }).queue(queue.name()));
    }
    let id = client.enqueue_batch(batch).await.expect("sent");
    let mut cleanup = Cleanup::default();
    cleanup.queue(batch_progress_queue(&id));
    wait_until("the batch is under way", TIMEOUT, || async {
        client.batch_progress(&id).await.is_ok_and(|p| p.done >= 40)
    })
    .await;
    first.kill();

    wait_until("the batch completes", TIMEOUT, || async { client.batch_progress(&id).await.is_ok_and(|p| p.complete) })
        .await;
    let progress = client.batch_progress(&id).await.expect("progress");
    assert_eq!((progress.done, progress.failed, progress.pending), (200, 0, 0));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let summaries = Remember::calls(&calls);
    assert_eq!(summaries.len(), 1, "the callback ran {} times", summaries.len());
    assert_eq!(summaries[0]["done"], 200);
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_batch_completes_when_a_reader_held_its_progress_as_its_last_record_came_in() {
    let queue = TestQueue::declare("batch-held").await;
    let client = connect().await;
    let calls = temp_file("held-callback");
    let batch = Batch::new()
        .callback(Request::new(Remember { path: calls.clone(), batch: Default::default() }).queue(queue.name()))
        .job(Request::new(Sleep { seconds: 0.0 }).queue(queue.name()));
    let id = client.enqueue_batch(batch).await.expect("sent");
    let mut cleanup = Cleanup::default();
    cleanup.queue(batch_progress_queue(&id));

    // Hold the stored snapshot, as a slow progress reader would, while the only job runs: the
    // tracker finds the batch busy and must try its record again once the reader lets go.
    let reader = queue.broker().channel().await.expect("channel");
    let held = reader
        .basic_get(batch_progress_queue(&id).as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .expect("basic.get")
        .expect("the stored snapshot");
    let _worker = lepus_tests::start_worker(queue.name(), &[]);
    wait_until("the job has run", TIMEOUT, || async { queue.ready().await == 0 && queue.consumers().await == 1 }).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(held);
    reader.close(200, "let go".into()).await.expect("closed");

    wait_until("the batch completes", Duration::from_secs(20), || async {
        client.batch_progress(&id).await.is_ok_and(|p| p.complete)
    })
    .await;
    wait_until("the callback ran", TIMEOUT, || async { !Remember::calls(&calls).is_empty() }).await;
    client.close().await.expect("closed");
}

#[tokio::test]
async fn an_unknown_batch_is_an_error() {
    let client = connect().await;
    let missing = lepus::BatchId::from("no-such-batch");
    assert!(matches!(client.batch_progress(&missing).await, Err(Error::UnknownBatch(_))));
}

#[tokio::test]
async fn a_callback_whose_queue_is_missing_is_held_and_sent_once_the_queue_exists() {
    let (queue, _worker) = lepus_tests::queue_with_worker("batch-late-callback").await;
    let client = connect().await;
    let calls = temp_file("late-callback");
    let callbacks = lepus_tests::unique_name("callbacks");
    let batch = Batch::new()
        .callback(Request::new(Remember { path: calls.clone(), batch: Default::default() }).queue(callbacks.as_str()))
        .job(Request::new(Sleep { seconds: 0.0 }).queue(queue.name()))
        .job(Request::new(Sleep { seconds: 0.0 }).queue(queue.name()));
    let id = client.enqueue_batch(batch).await.expect("sent");
    let mut cleanup = Cleanup::default();
    cleanup.queue(batch_progress_queue(&id));

    // Both jobs finish, but the callback has nowhere to go: the batch is finished, not complete.
    wait_until("both jobs finished", TIMEOUT, || async {
        client.batch_progress(&id).await.is_ok_and(|p| p.pending == 0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await; // a tracker tries again after 1 s, then 2 s
    let progress = client.batch_progress(&id).await.expect("progress");
    assert_eq!((progress.done, progress.pending, progress.complete), (2, 0, false), "{progress:?}");
    assert!(Remember::calls(&calls).is_empty());

    // The queue appears: the kept callback is sent, once, and the batch completes.
    let callback_queue = TestQueue::declare_with(lepus::WorkQueue::new(callbacks.as_str()).expect("valid")).await;
    let _callback_worker = lepus_tests::start_worker(callback_queue.name(), &[]);
    wait_until("the callback ran", Duration::from_secs(90), || async { !Remember::calls(&calls).is_empty() }).await;
    wait_until("the batch completes", TIMEOUT, || async { client.batch_progress(&id).await.is_ok_and(|p| p.complete) })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await; // a second call would show up now
    assert_eq!(Remember::calls(&calls).len(), 1, "the callback runs once");
    assert_eq!(Remember::calls(&calls)[0]["done"], 2);
    client.close().await.expect("closed");
}
