//! A Lepus worker's remote control, asked through `lepus::control::Mailbox` (what `celery
//! inspect`/`control` and `lepus` use): refusals that say why, queues added and cancelled while
//! it runs, a running job terminated, revokes learnt by a worker that starts later, remote control
//! turned off, and one node name per process.

use lepus::control::{Mailbox, Nodes};
use lepus::{Error, Request};
use lepus_demo::jobs::{Add, Sleep};
use lepus_tests::{TestQueue, connect, start_worker, unique_name, wait_until, worker_binary};
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(30);

fn node(what: &str) -> String {
    format!("{}@lepus-tests", unique_name(what))
}

fn arguments(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The reply of `node` to `method`.
async fn ask(mailbox: &mut Mailbox, node: &str, method: &str, args: Value) -> Value {
    let nodes = [node.to_owned()];
    let replies = mailbox.call(method, arguments(args), Nodes::Named(&nodes), Duration::from_secs(5), Some(1)).await;
    let replies = replies.expect("the broker answers");
    replies.into_iter().find(|(name, _)| name == node).map(|(_, reply)| reply).unwrap_or(Value::Null)
}

#[tokio::test]
async fn commands_a_lepus_worker_cannot_honour_get_a_reply_that_says_so() {
    let queue = TestQueue::declare("refusals").await;
    let name = node("refusals");
    let _worker = start_worker(queue.name(), &["--name", &name]);
    queue.wait_for_consumers(1).await;
    let mut mailbox = Mailbox::open(queue.broker()).await.expect("a mailbox");
    let stamped = ask(&mut mailbox, &name, "revoke_by_stamped_headers", json!({"headers": {"k": "v"}})).await;
    assert!(stamped["error"].as_str().is_some_and(|e| e.contains("revoke jobs by id")), "{stamped}");
    let grow = ask(&mut mailbox, &name, "pool_grow", json!({"n": 1})).await;
    assert!(grow["error"].as_str().is_some_and(|e| e.contains("no process pool")), "{grow}");
    let unknown = ask(&mut mailbox, &name, "frobnicate", json!({})).await;
    assert_eq!(unknown, json!({"error": "a Lepus worker does not know the command \"frobnicate\""}));
    assert_eq!(ask(&mut mailbox, &name, "ping", json!({})).await, json!({"ok": "pong"}), "and it carries on");
    mailbox.close().await;
}

#[tokio::test]
async fn add_consumer_and_cancel_consumer_change_the_queues_a_running_worker_consumes() {
    let (first, second) = (TestQueue::declare("consumed").await, TestQueue::declare("added").await);
    let name = node("consumers");
    let _worker = start_worker(first.name(), &["--name", &name]);
    first.wait_for_consumers(1).await;
    let mut mailbox = Mailbox::open(first.broker()).await.expect("a mailbox");

    let added = ask(&mut mailbox, &name, "add_consumer", json!({"queue": second.name()})).await;
    assert_eq!(added, json!({"ok": format!("add consumer {}", second.name())}));
    second.wait_for_consumers(1).await;
    let client = connect().await;
    let sum = client.call(Request::new(Add { a: 20, b: 22 }).queue(second.name()), TIMEOUT).await;
    assert_eq!(sum.expect("run from the added queue"), 42);
    let queues = ask(&mut mailbox, &name, "active_queues", json!({})).await;
    assert_eq!(queues.as_array().map(Vec::len), Some(2), "{queues}");

    let cancelled = ask(&mut mailbox, &name, "cancel_consumer", json!({"queue": first.name()})).await;
    assert_eq!(cancelled, json!({"ok": format!("no longer consuming from {}", first.name())}));
    wait_until("the first queue has no consumer", TIMEOUT, || async { first.consumers().await == 0 }).await;
    assert_eq!(second.consumers().await, 1, "the added queue is still consumed");
    let again = ask(&mut mailbox, &name, "cancel_consumer", json!({"queue": first.name()})).await;
    assert!(again["error"].is_string(), "{again}");
    mailbox.close().await;
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_revoke_with_terminate_stops_a_running_job_and_its_caller_gets_revoked() {
    let queue = TestQueue::declare("terminate").await;
    let name = node("terminate");
    let _worker = start_worker(queue.name(), &["--name", &name]);
    queue.wait_for_consumers(1).await;
    let client = connect().await;
    let pending = client.submit(Request::new(Sleep { seconds: 60.0 }).queue(queue.name())).await.expect("submitted");
    let id = pending.id().to_string();
    let mut mailbox = Mailbox::open(queue.broker()).await.expect("a mailbox");
    let mut found = false;
    for _ in 0..100 {
        let active = ask(&mut mailbox, &name, "active", json!({})).await;
        if active.as_array().is_some_and(|jobs| jobs.iter().any(|job| job["id"] == id.as_str())) {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "the job runs");
    let started = Instant::now();
    let reply = ask(&mut mailbox, &name, "revoke", json!({"task_id": id, "terminate": true})).await;
    assert_eq!(reply, json!({"ok": format!("terminate: {id}")}));
    match pending.output(TIMEOUT).await {
        Err(Error::JobRevoked { exception, .. }) => assert_eq!(exception.message(), "terminated"),
        other => panic!("expected REVOKED, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(queue.ready().await, 0, "acked, not redelivered");
    mailbox.close().await;
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_worker_started_after_a_revoke_learns_it_from_the_running_workers() {
    let (first, second) = (TestQueue::declare("knows").await, TestQueue::declare("learns").await);
    let _running = start_worker(first.name(), &["--name", &node("knows")]);
    first.wait_for_consumers(1).await;
    let revoked = lepus::JobId::random();
    let mut mailbox = Mailbox::open(first.broker()).await.expect("a mailbox");
    mailbox.cast("revoke", arguments(json!({"task_id": [revoked.as_str()]})), Nodes::All).await.expect("sent");
    mailbox.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let _later = start_worker(second.name(), &["--name", &node("learns")]);
    second.wait_for_consumers(1).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // its hello waits a second for replies
    let client = connect().await;
    let pending = client.submit(Request::new(Add { a: 1, b: 1 }).queue(second.name()).id(revoked)).await;
    match pending.expect("submitted").output(TIMEOUT).await {
        Err(Error::JobRevoked { exception, .. }) => assert_eq!(exception.message(), "revoked"),
        other => panic!("expected REVOKED, got {other:?}"),
    }
    client.close().await.expect("closed");
}

#[tokio::test]
async fn without_remote_control_a_worker_answers_nothing_and_has_no_command_queue() {
    let queue = TestQueue::declare("no-control").await;
    let name = node("no-control");
    let _worker = start_worker(queue.name(), &["--name", &name, "--without-remote-control"]);
    queue.wait_for_consumers(1).await;
    let mut mailbox = Mailbox::open(queue.broker()).await.expect("a mailbox");
    assert_eq!(ask(&mut mailbox, &name, "ping", json!({})).await, Value::Null, "no reply");
    mailbox.close().await;
    let pidbox = lepus::internal::topology::pidbox_queue(&name);
    assert!(lepus::internal::topology::inspect_queue(queue.broker(), &pidbox).await.expect("asked").is_none());
}

#[tokio::test]
async fn a_second_worker_with_the_same_node_name_is_refused_at_start_up() {
    let queue = TestQueue::declare("same-name").await;
    let name = node("same-name");
    let _first = start_worker(queue.name(), &["--name", &name]);
    queue.wait_for_consumers(1).await;
    let output = std::process::Command::new(worker_binary())
        .args(["--queue", queue.name(), "--name", &name])
        .env("LEPUS_AMQP_URL", lepus_tests::amqp_url())
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("the node name {name:?} is in use by another running worker")), "{stderr}");
}
