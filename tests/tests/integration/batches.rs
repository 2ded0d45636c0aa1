//! Batches: completion is tracked in the broker, progress reads are consistent midway, and the
//! callback runs exactly once with the batch's summary, even when a worker (or the active tracker)
//! dies mid-batch; thousands of batches make no queue of their own.

use lepus::internal::topology::{
    BATCH_PROGRESS_STREAM, BATCH_RECORDS_QUEUE, BATCH_STATE_QUEUE, DEFAULT_BATCH_RETENTION,
};
use lepus::{Batch, BatchProgress, Error, JobId, Request};
use lepus_demo::jobs::{Fail, Sleep};
use lepus_tests::{Remember, TestQueue, connect, consumers_of, queue_names, temp_file, wait_until};
use std::collections::{BTreeSet, HashMap};
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
    // 490 jobs of 50 ms on 8 slots: about 3 s, so the progress stream (one snapshot a second at
    // most for an unfinished batch) has snapshots midway for a while. With 20 ms jobs the batch
    // took little more than that second, and once no read fell in the short window.
    for i in 0..500 {
        batch = if i % 50 == 7 {
            batch.job(Request::new(Fail { message: format!("job {i} fails") }).queue(queue.name()))
        } else {
            batch.job(Request::new(Sleep { seconds: 0.05 }).queue(queue.name()))
        };
    }
    let id = client.enqueue_batch(batch).await.expect("sent");

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

/// Sends `count` batches of `size` jobs (`add_job` adds job `i` for `queue`), `in_flight` at a
/// time, each calling back to `test.remember` on `callbacks` with `calls`; their ids are
/// `<prefix>-<n>`.
async fn send_batches(
    client: &lepus::Client,
    (queue, callbacks): (&str, &str),
    prefix: &str,
    (count, size, in_flight): (usize, usize, usize),
    calls: &str,
    add_job: fn(Batch, usize, &str) -> Batch,
) -> Vec<lepus::BatchId> {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(in_flight));
    let mut sending = tokio::task::JoinSet::new();
    for n in 0..count {
        let permit = std::sync::Arc::clone(&permits).acquire_owned().await.expect("open");
        let callback = Request::new(Remember { path: calls.to_owned(), batch: Default::default() }).queue(callbacks);
        let mut batch = Batch::new().id(format!("{prefix}-{n}")).callback(callback);
        for i in 0..size {
            batch = add_job(batch, i, queue);
        }
        let client = client.clone();
        sending.spawn(async move {
            let id = client.enqueue_batch(batch).await.expect("sent");
            drop(permit);
            id
        });
    }
    let mut ids = Vec::with_capacity(count);
    while let Some(id) = sending.join_next().await {
        ids.push(id.expect("sending task"));
    }
    ids
}

/// The callbacks remembered in `calls`, counted by batch id.
fn callbacks_by_batch(calls: &str) -> HashMap<String, usize> {
    let mut by_batch = HashMap::new();
    for call in Remember::calls(calls) {
        *by_batch.entry(call["id"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
    }
    by_batch
}

/// Waits (polling every half second) until `calls` holds `count` callbacks.
async fn wait_for_callbacks(calls: &str, count: usize, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let seen = Remember::calls(calls).len();
        if seen >= count {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "only {seen} of {count} callbacks after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn add(batch: Batch, i: usize, queue: &str) -> Batch {
    let a = i64::try_from(i).unwrap_or_default();
    batch.job(Request::new(lepus_demo::jobs::Add { a, b: 1 }).queue(queue))
}

fn short_sleep(batch: Batch, _: usize, queue: &str) -> Batch {
    batch.job(Request::new(Sleep { seconds: 0.02 }).queue(queue))
}

/// Queues named `lepus.batch…` on the broker now.
fn batch_queues() -> BTreeSet<String> {
    queue_names().into_iter().filter(|name| name.starts_with("lepus.batch")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tracker_alone_ten_thousand_batches_each_call_back_once_and_no_batch_has_a_queue() {
    const BATCHES: usize = 10_000;
    let before = batch_queues();
    let queue = TestQueue::declare("batch-10k").await;
    let _workers: Vec<_> = (0..2).map(|_| lepus_tests::start_worker(queue.name(), &["--concurrency", "64"])).collect();
    queue.wait_for_consumers(2).await;
    let client = connect().await;
    let calls = temp_file("10k-callbacks");
    let prefix = lepus_tests::unique_name("10k");

    let started = std::time::Instant::now();
    let ids = send_batches(&client, (queue.name(), queue.name()), &prefix, (BATCHES, 10, 64), &calls, add).await;
    let sent = started.elapsed();
    wait_for_callbacks(&calls, BATCHES, Duration::from_secs(150)).await;
    let done = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await; // a second call would show up now
    eprintln!("{BATCHES} batches of 10: sent in {sent:?}, all called back after {done:?}");

    let by_batch = callbacks_by_batch(&calls);
    assert_eq!(by_batch.len(), BATCHES, "callbacks of {} batches", by_batch.len());
    let twice: Vec<_> = by_batch.iter().filter(|(_, calls)| **calls != 1).collect();
    assert!(twice.is_empty(), "called back other than once: {twice:?}");
    assert!(ids.iter().all(|id| by_batch.contains_key(id.as_str())));
    for summary in Remember::calls(&calls).iter().take(100) {
        assert_eq!((summary["done"].as_u64(), summary["failed"].as_u64()), (Some(10), Some(0)), "{summary}");
    }
    let first = client.batch_progress(&ids[0]).await.expect("progress");
    assert_eq!((first.done, first.pending, first.complete), (10, 0, true));

    let all = queue_names();
    let named_after_a_batch: Vec<&String> = all.iter().filter(|name| name.contains(&prefix)).collect();
    assert!(named_after_a_batch.is_empty(), "queues named after batches: {named_after_a_batch:?}");
    let after = batch_queues();
    let new: BTreeSet<&str> = after.difference(&before).map(String::as_str).collect();
    let constant = [BATCH_RECORDS_QUEUE, BATCH_STATE_QUEUE, BATCH_PROGRESS_STREAM];
    assert!(new.iter().all(|name| constant.contains(name)), "new batch queues: {new:?}");
    assert!(constant.iter().all(|name| after.contains(*name)), "the batch queues are {after:?}");
    client.close().await.expect("closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracker_alone_killed_mid_run_hands_over_and_every_batch_calls_back_once() {
    const BATCHES: usize = 300;
    let queue = TestQueue::declare("batch-tracker-kill").await;
    let callbacks = TestQueue::declare("batch-tracker-kill-callbacks").await;
    let mut first = lepus_tests::start_worker(queue.name(), &["--concurrency", "8"]);
    queue.wait_for_consumers(1).await;
    wait_until("the worker's tracker consumes the batch records", TIMEOUT, || async {
        consumers_of(BATCH_RECORDS_QUEUE).len() == 1
    })
    .await;
    // Callbacks run on a worker never killed: a job killed midway runs again (at least once),
    // which would hide whether the tracker sent a callback twice.
    let callback_worker = lepus_tests::start_worker(callbacks.name(), &[]);
    callbacks.wait_for_consumers(1).await;
    let client = connect().await;
    let calls = temp_file("kill-callbacks");
    let prefix = lepus_tests::unique_name("kill");
    let completed_by = |worker: &lepus_tests::Process| {
        std::fs::read_to_string(worker.log_path()).unwrap_or_default().matches("batch complete").count()
    };

    let sending =
        send_batches(&client, (queue.name(), callbacks.name()), &prefix, (BATCHES, 10, 16), &calls, short_sleep);
    let killing = async {
        wait_until("the first tracker has completed 30 batches", TIMEOUT, || async { completed_by(&first) >= 30 })
            .await;
        // The active tracker, midway: some batches have completed, most have not.
        first.kill();
    };
    let (ids, ()) = tokio::join!(sending, killing);
    let completed_first = completed_by(&first);
    assert!(completed_first < BATCHES, "the run was over before the kill");
    let second = lepus_tests::start_worker(queue.name(), &["--concurrency", "8"]);
    wait_for_callbacks(&calls, BATCHES, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // a second call would show up now
    let finished_first = Remember::calls(&calls)[0]["id"].as_str().expect("an id").to_owned();

    let by_batch = callbacks_by_batch(&calls);
    assert_eq!(by_batch.len(), BATCHES);
    let twice: Vec<_> = by_batch.iter().filter(|(_, calls)| **calls != 1).collect();
    assert!(twice.is_empty(), "called back other than once: {twice:?}");
    for summary in Remember::calls(&calls) {
        assert_eq!(summary["done"].as_u64(), Some(10), "a repeated record counted twice, or one lost: {summary}");
    }
    assert!(ids.iter().all(|id| by_batch.contains_key(id.as_str())));

    // A new tracker (the callback worker's, first in line) took over and compacted the state:
    // the batches complete by then left it.
    let took_over = [&second, &callback_worker].map(|worker| {
        std::fs::read_to_string(worker.log_path()).unwrap_or_default().contains("state loaded and compacted")
    });
    assert!(took_over.contains(&true), "no tracker took over");
    // Yet their progress stays readable, from the stream, by a client that did not send them.
    let stranger = connect().await;
    let progress = stranger.batch_progress(&lepus::BatchId::from(finished_first.as_str())).await.expect("progress");
    assert_eq!((progress.done, progress.pending, progress.complete), (10, 0, true), "{progress:?}");
    stranger.close().await.expect("closed");
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_worker_asking_another_batch_retention_than_the_stream_has_fails_naming_the_setting() {
    // The stream exists (any worker declares it) with the default retention of every test worker.
    let broker = lepus::Broker::connect(&lepus_tests::amqp_url(), "lepus-tests-retention").await.expect("broker");
    let channel = broker.channel().await.expect("channel");
    lepus::internal::topology::declare_batch_progress(&channel, DEFAULT_BATCH_RETENTION).await.expect("declared");
    drop(channel.close(200, "declared".into()).await);

    let queue = TestQueue::declare("batch-retention").await;
    let mut worker = lepus_tests::start_worker(queue.name(), &["--batch-retention", "1d"]);
    let exit = worker.wait_exit(TIMEOUT).await.expect("the worker exits");
    assert_eq!(exit.code(), Some(1));
    let log = std::fs::read_to_string(worker.log_path()).expect("log");
    assert!(log.contains("batch_retention = 86400s"), "{log}");
    assert!(log.contains("inequivalent arg 'x-max-age'"), "{log}");

    let mut short = lepus_tests::start_worker(queue.name(), &["--batch-retention", "5s"]);
    let exit = short.wait_exit(TIMEOUT).await.expect("the worker exits");
    assert_eq!(exit.code(), Some(2));
    let log = std::fs::read_to_string(short.log_path()).expect("log");
    assert!(log.contains("batch_retention: 5s is too short"), "{log}");
    broker.close().await;
}

#[tokio::test]
async fn a_scheduled_batch_calls_back_once_per_tick_and_its_progress_reads_complete() {
    let (queue, _worker) = lepus_tests::queue_with_worker("batch-scheduled").await;
    let (ticks, calls) = (temp_file("scheduled-ticks"), temp_file("scheduled-calls"));
    let schedules = temp_file("batch-schedules");
    let name = lepus_tests::unique_name("fan");
    let q = queue.name();
    std::fs::write(
        &schedules,
        format!(
            "[[schedule]]\nname = \"{name}\"\ncron = \"*/2 * * * * *\"\njob = \"test.tick\"\nqueue = \"{q}\"\n\
             kwargs = {{ path = \"{ticks}\" }}\nitems = [{{ a = 1 }}, {{ a = 2 }}, {{ a = 3 }}]\n\
             callback = {{ job = \"test.remember\", queue = \"{q}\", kwargs = {{ path = \"{calls}\" }} }}\n"
        ),
    )
    .expect("schedule file");
    let group = lepus_tests::unique_name("group");
    let mut cleanup = lepus_tests::Cleanup::default();
    cleanup.queue(lepus::internal::topology::scheduler_leader_queue(&group));
    cleanup.queue(lepus::internal::topology::schedule_state_queue(&group, &name));
    let mut command = std::process::Command::new(lepus_tests::scheduler_binary());
    command.args(["run", "--schedules", &schedules, "--group", &group, "--heartbeat", "2s"]);
    let mut scheduler = lepus_tests::spawn(command, "scheduler");

    wait_until("two ticks' batches called back", TIMEOUT, || async { Remember::calls(&calls).len() >= 2 }).await;
    scheduler.terminate().expect("SIGTERM sent");
    assert!(scheduler.wait_exit(TIMEOUT).await.is_some_and(|status| status.success()));
    tokio::time::sleep(Duration::from_secs(2)).await; // the last firing's batch completes
    let by_batch = callbacks_by_batch(&calls);
    assert!(by_batch.values().all(|calls| *calls == 1), "{by_batch:?}");
    let client = connect().await;
    for (id, _) in by_batch {
        assert!(id.starts_with(&format!("{name}@")), "{id}");
        let progress = client.batch_progress(&lepus::BatchId::from(id.as_str())).await.expect("progress");
        assert_eq!((progress.total, progress.done, progress.complete), (3, 3, true), "{progress:?}");
    }
    client.close().await.expect("closed");
}
