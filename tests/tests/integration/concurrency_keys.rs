//! Concurrency per key: at most `limit` jobs with a key run at once across every worker process,
//! the others wait and all finish; a killed worker's slots come back; a malformed header is a
//! dead letter with its reason. The handlers return when they ran; the tests rebuild from those
//! spans how many ran at once per key.

use lepus::internal::topology::{slot_lock_queue, slot_marker_queue, slot_queue};
use lepus::lapin::types::{AMQPValue, LongString};
use lepus::protocol::{Arguments, Status, TaskMessage};
use lepus::{CONCURRENCY_KEY_HEADER, CONCURRENCY_LIMIT_HEADER, Concurrency, Request};
use lepus_tests::{Cleanup, Keyed, Span, TestQueue, connect, unique_name, wait_until};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Deletes the slot queues (and any lock or marker) of these keys at the end of the test.
fn cleanup(keys: &[Concurrency]) -> Cleanup {
    let mut cleanup = Cleanup::default();
    for key in keys {
        cleanup.queue(slot_queue(key));
        cleanup.queue(slot_marker_queue(key));
        cleanup.queue(slot_lock_queue(key));
    }
    cleanup
}

/// How many messages of `queue` are unacked (slots held), by `rabbitmqctl`.
fn held(queue: &str) -> u64 {
    let listing =
        lepus_tests::rabbitmqctl(&["list_queues", "-q", "--no-table-headers", "name", "messages_unacknowledged"]);
    listing
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .find(|(name, _)| *name == queue)
        .and_then(|(_, count)| count.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn four_workers_never_run_more_than_a_keys_limit_and_all_200_finish() {
    let queue = TestQueue::declare("keys").await;
    let run = unique_name("key");
    let keys: Vec<Concurrency> = (1..=5).map(|limit| Concurrency::new(format!("{run}-{limit}"), limit)).collect();
    let _cleanup = cleanup(&keys);
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(lepus_tests::start_worker(queue.name(), &["--concurrency", "10"]));
    }
    queue.wait_for_consumers(4).await;
    let client = connect().await;
    let started = Instant::now();
    let mut pending = Vec::new();
    for i in 0..200 {
        let key = &keys[i % keys.len()];
        let job = Keyed { key: key.key.clone(), limit: key.limit, sleep_ms: 150, record: None };
        pending.push((key.limit, client.submit(Request::new(job).queue(queue.name())).await.expect("submitted")));
    }
    let mut spans: BTreeMap<u32, Vec<Span>> = BTreeMap::new();
    let mut pids = std::collections::BTreeSet::new();
    for (limit, job) in pending {
        let span = job.output(Duration::from_secs(120)).await.expect("every job finishes");
        pids.insert(span.pid);
        spans.entry(limit).or_default().push(span);
    }
    let took = started.elapsed();
    println!("200 keyed jobs on 4 workers in {took:?}; {} workers ran some", pids.len());
    for (limit, spans) in &spans {
        let peak = Span::peak(spans);
        println!("limit {limit}: {} jobs, peak running at once {peak}", spans.len());
        assert_eq!(spans.len(), 40, "every job of the key finished");
        assert!(peak <= *limit as usize, "limit {limit}: {peak} ran at once");
        assert_eq!(peak, *limit as usize, "limit {limit}: the limit is used, not less");
    }
    assert!(pids.len() >= 2, "jobs ran on several workers: {pids:?}");
    // The key of limit 1 runs its 40 jobs one after the other: at least 40 × 150 ms.
    assert!(took >= Duration::from_secs(6), "{took:?}");
    client.close().await.expect("closed");
    drop(workers);
}

#[tokio::test]
async fn a_killed_workers_slots_come_back() {
    let queue = TestQueue::declare("keys-kill").await;
    let key = Concurrency::new(unique_name("key-kill"), 2);
    let _cleanup = cleanup(std::slice::from_ref(&key));
    let mut first = lepus_tests::start_worker(queue.name(), &["--concurrency", "4"]);
    queue.wait_for_consumers(1).await;
    let client = connect().await;
    let mut pending = Vec::new();
    for _ in 0..20 {
        let job = Keyed { key: key.key.clone(), limit: key.limit, sleep_ms: 400, record: None };
        pending.push(client.submit(Request::new(job).queue(queue.name())).await.expect("submitted"));
    }
    let slots = slot_queue(&key);
    wait_until("the first worker holds both slots", Duration::from_secs(20), || async { held(&slots) == 2 }).await;
    let second = lepus_tests::start_worker(queue.name(), &["--concurrency", "4"]);
    queue.wait_for_consumers(2).await;
    first.kill();
    let killed_at = Instant::now();

    let mut after = Vec::new();
    let survivor = lepus_tests::node_name(&second);
    for job in pending {
        let result = job.result_message(Duration::from_secs(60)).await.expect("every job finishes");
        assert_eq!(result.status, Status::Success, "{result:?}");
        let span: Span = serde_json::from_value(result.result.clone()).expect("a span");
        if result.worker.as_deref() == Some(survivor.as_str()) {
            after.push(span);
        }
    }
    let peak = Span::peak(&after);
    println!(
        "{} jobs ran on the surviving worker after the kill, within {:?}; peak at once {peak}",
        after.len(),
        killed_at.elapsed()
    );
    // The first worker held both slots when it died: the survivor could run nothing, let alone
    // two at once, had the broker not given them back.
    assert!(after.len() >= 10, "the survivor ran the rest: {}", after.len());
    assert_eq!(peak, 2, "both slots came back");
    assert_eq!(held(&slots), 0, "no slot held once all is done");
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_malformed_limit_is_a_dead_letter_with_its_reason() {
    let queue = TestQueue::declare("keys-bad").await;
    let (worker_queue, _worker) = (queue.name().to_owned(), lepus_tests::start_worker(queue.name(), &[]));
    queue.wait_for_consumers(1).await;
    let job = Keyed { key: "k".into(), limit: 1, sleep_ms: 1, record: None };
    let mut message = TaskMessage::new("test.keyed", Arguments::from_input(&job).expect("encodes"));
    message.extra_headers.insert(CONCURRENCY_KEY_HEADER.into(), AMQPValue::LongString(LongString::from("tenant-1")));
    message.extra_headers.insert(CONCURRENCY_LIMIT_HEADER.into(), AMQPValue::LongString(LongString::from("abc/s")));
    queue.publish(&message).await;
    let dlq = queue.dead_letter_queue();
    wait_until("the message is dead-lettered", Duration::from_secs(20), || async { queue.ready_in(&dlq).await == 1 })
        .await;
    let dead = queue.take_all(&dlq).await;
    assert_eq!(dead.len(), 1);
    let headers = dead[0].properties.headers().clone().unwrap_or_default();
    let header = |name: &str| lepus::internal::header_str(&headers, name).map(|v| v.into_owned()).unwrap_or_default();
    assert_eq!(header("x-lepus-reason"), "undecodable");
    let error = header("x-lepus-error");
    assert!(error.contains("x-lepus-concurrency-limit") && error.contains("abc/s"), "{error}");
    assert_eq!(queue.ready().await, 0, "not requeued, {worker_queue} is empty");
}

#[tokio::test]
async fn a_request_with_a_bad_key_is_refused_before_it_is_sent() {
    let client = connect().await;
    let queue = TestQueue::declare("keys-refused").await;
    let job = Keyed { key: "k".into(), limit: 1, sleep_ms: 1, record: None };
    let error =
        client.enqueue(Request::new(job).queue(queue.name()).concurrency_key("a b", 2)).await.expect_err("bad key");
    assert!(error.to_string().contains("white space"), "{error}");
    let error = client
        .enqueue(Request::task("test.keyed", Arguments::default()).queue(queue.name()).concurrency_key("k", 0))
        .await;
    assert!(error.expect_err("limit 0").to_string().contains("between 1 and 1000"));
    assert_eq!(queue.ready().await, 0, "nothing was sent");
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_job_waiting_for_a_slot_goes_back_after_the_wait_and_lets_other_jobs_by() {
    let queue = TestQueue::declare("keys-wait").await;
    let key = Concurrency::new(unique_name("key-wait"), 1);
    let _cleanup = cleanup(std::slice::from_ref(&key));
    // Two places: one for the long keyed job, one that its waiting sibling would block.
    let _worker = lepus_tests::start_worker(queue.name(), &["--concurrency", "2", "--slot-wait", "1s"]);
    queue.wait_for_consumers(1).await;
    let client = connect().await;
    let started = Instant::now();
    let keyed =
        |sleep_ms| Request::new(Keyed { key: key.key.clone(), limit: 1, sleep_ms, record: None }).queue(queue.name());
    let long = client.submit(keyed(7000)).await.expect("submitted");
    wait_until("the long job holds the slot", Duration::from_secs(10), || async { held(&slot_queue(&key)) == 1 }).await;
    let waiting = client.submit(keyed(10)).await.expect("submitted");
    let mut plain = Vec::new();
    for _ in 0..6 {
        let job = lepus_demo::jobs::Sleep { seconds: 0.1 };
        plain.push(client.submit(Request::new(job).queue(queue.name())).await.expect("submitted"));
    }
    for job in plain {
        job.result_message(Duration::from_secs(30)).await.expect("plain jobs finish");
    }
    let plain_done_us = now_us();
    let long = long.output(Duration::from_secs(30)).await.expect("the long job finishes");
    let waited = waiting.output(Duration::from_secs(30)).await.expect("the waiting job finishes");
    let ahead = Duration::from_micros(long.end_us.saturating_sub(plain_done_us));
    println!("the plain jobs were done {ahead:?} before the long keyed job ended, after {:?}", started.elapsed());
    // Had the waiting job kept its place, the plain jobs could only start when the long one
    // ended (7 s in); handed back after 1 s, they run meanwhile.
    assert!(ahead >= Duration::from_secs(2), "{ahead:?}");
    assert!(waited.start_us >= long.end_us, "the limit of 1 held: {waited:?} began before {long:?} ended");
    // Handed back about 6 times, more than the queue's delivery limit (5): each time as a new
    // message, so it was never dead-lettered.
    assert_eq!(queue.ready_in(&queue.dead_letter_queue()).await, 0);
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_python_celery_client_sets_the_key_in_headers() {
    let queue = TestQueue::declare("keys-py").await;
    let key = Concurrency::new(unique_name("key-py"), 2);
    let _cleanup = cleanup(std::slice::from_ref(&key));
    let _workers: Vec<_> = (0..2).map(|_| lepus_tests::start_worker(queue.name(), &["--concurrency", "4"])).collect();
    queue.wait_for_consumers(2).await;
    let env = [("LEPUS_TEST_KEY", key.key.as_str()), ("LEPUS_TEST_LIMIT", "2"), ("LEPUS_TEST_JOBS", "12")];
    let lines = lepus_tests::run_python_with("keyed_jobs.py", queue.name(), &env).await;
    let spans: Vec<Span> = serde_json::from_value(lines[0].clone()).expect("12 spans");
    let peak = Span::peak(&spans);
    println!("12 jobs from Python with limit 2 in headers: peak at once {peak}");
    assert_eq!(spans.len(), 12);
    assert_eq!(peak, 2, "at most 2 at once, and 2 were");
}

#[tokio::test]
async fn a_job_whose_worker_loses_its_connection_is_cancelled_with_its_slot_and_runs_again() {
    let queue = TestQueue::declare("keys-cut").await;
    let key = Concurrency::new(unique_name("key-cut"), 1);
    let _cleanup = cleanup(std::slice::from_ref(&key));
    let worker = lepus_tests::start_worker(queue.name(), &["--concurrency", "2"]);
    queue.wait_for_consumers(1).await;
    let client = connect().await;
    let record = lepus_tests::temp_file("keys-cut");
    let job = Keyed { key: key.key.clone(), limit: 1, sleep_ms: 4000, record: Some(record.clone()) };
    let pending = client.submit(Request::new(job).queue(queue.name())).await.expect("submitted");
    wait_until("the job holds the slot", Duration::from_secs(10), || async { held(&slot_queue(&key)) == 1 }).await;
    let cut_us = now_us();
    assert!(lepus_tests::cut_connections(&format!("lepus-worker {}", lepus_tests::node_name(&worker))) >= 1);

    let span = pending.output(Duration::from_secs(30)).await.expect("the job runs again and finishes");
    let lines = std::fs::read_to_string(&record).unwrap_or_default();
    let lines: Vec<&str> = lines.lines().collect();
    println!("runs recorded: {lines:?}; the cut at {cut_us}, the second run from {}", span.start_us);
    // The first run began before the cut and never ended: it was cancelled when its slot went.
    // The second began after the cut, so the two never ran at once beyond the cancellation.
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("start ") && lines[1].starts_with("start ") && lines[2].starts_with("end "));
    assert!(span.start_us > cut_us);
    assert_eq!(held(&slot_queue(&key)), 0, "the slot was given back");
    client.close().await.expect("closed");
    drop(std::fs::remove_file(&record));
}

#[tokio::test]
async fn a_slot_queue_whose_creator_died_half_way_is_created_again() {
    let queue = TestQueue::declare("keys-repair").await;
    let key = Concurrency::new(unique_name("key-repair"), 2);
    let _cleanup = cleanup(std::slice::from_ref(&key));
    // As a creator that died between declaring the queue and committing its slots leaves it:
    // the marker and an empty slot queue.
    let channel = queue.broker().channel().await.expect("channel");
    lepus::internal::topology::declare_slot_marker(&channel, &key).await.expect("marker");
    lepus::internal::topology::declare_slot_queue(&channel, &key).await.expect("slot queue");
    let _worker = lepus_tests::start_worker(queue.name(), &["--concurrency", "4", "--slot-wait", "1s"]);
    queue.wait_for_consumers(1).await;
    let client = connect().await;
    let started = Instant::now();
    let mut pending = Vec::new();
    for _ in 0..8 {
        let job = Keyed { key: key.key.clone(), limit: key.limit, sleep_ms: 200, record: None };
        pending.push(client.submit(Request::new(job).queue(queue.name())).await.expect("submitted"));
    }
    let mut spans = Vec::new();
    for job in pending {
        spans.push(job.output(Duration::from_secs(30)).await.expect("every job finishes"));
    }
    let peak = Span::peak(&spans);
    println!("8 jobs after the repair in {:?}; peak at once {peak}", started.elapsed());
    assert_eq!(peak, 2, "two slots, no more, no fewer");
    assert_eq!(queue.ready_in(&slot_queue(&key)).await, 2, "the new queue holds its 2 slots again");
    let marker = lepus::internal::topology::inspect_queue(queue.broker(), &slot_marker_queue(&key)).await;
    assert!(marker.expect("inspected").is_none(), "the marker is gone");
    client.close().await.expect("closed");
}
