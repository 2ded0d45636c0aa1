//! The `lepus` command line against a running system: `status`, `queues`, `inspect`, `revoke`,
//! `schedules`, dead letters, jobs and batches; tables for people, `--json` that parses; and no
//! queue left behind by any one-shot command.

use lepus::Request;
use lepus::internal::topology::{schedule_state_queue, scheduler_leader_queue};
use lepus::protocol::{Arguments, TaskMessage};
use lepus_demo::jobs::Sleep;
use lepus_tests::{
    Cleanup, TestQueue, Tick, cli_binary, connect, rabbitmqctl, scheduler_binary, spawn, start_worker, temp_file,
    unique_name, wait_until,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `lepus <args>`; its standard output, after checking it succeeded.
fn lepus(args: &[&str]) -> String {
    let output =
        Command::new(cli_binary()).args(args).env("LEPUS_AMQP_URL", lepus_tests::amqp_url()).output().expect("runs");
    assert!(output.status.success(), "lepus {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `lepus --json <args>` and parses what it printed.
fn lepus_json(args: &[&str]) -> Value {
    let out = lepus(&[&["--json"], args].concat());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("lepus --json {args:?} printed no JSON ({e}):\n{out}"))
}

fn node(what: &str) -> String {
    format!("{}@lepus-tests", unique_name(what))
}

#[tokio::test]
async fn status_queues_and_inspect_show_the_workers_and_queues_a_test_set_up() {
    let queue = TestQueue::declare("cli-status").await;
    let name = node("cli-status");
    let _worker = start_worker(queue.name(), &["--name", &name, "--concurrency", "3"]);
    queue.wait_for_consumers(1).await;
    for _ in 0..2 {
        queue.publish(&TaskMessage::new("no.such.job", Arguments::default())).await;
    }
    let dlq = queue.dead_letter_queue();
    wait_until("two dead letters", TIMEOUT, || async { queue.ready_in(&dlq).await == 2 }).await;

    let status = lepus_json(&["status"]);
    let mine = status.as_array().and_then(|w| w.iter().find(|w| w["name"] == name.as_str())).cloned().expect("listed");
    assert_eq!(mine["concurrency"], 3, "{mine}");
    assert_eq!(mine["queues"], serde_json::json!([queue.name()]), "{mine}");
    let table = lepus(&["status"]);
    assert!(table.lines().next().is_some_and(|h| h.starts_with("NAME")), "{table}");
    assert!(table.lines().any(|l| l.starts_with(&name) && l.contains(queue.name())), "{table}");

    let queues = lepus_json(&["queues"]);
    let row = queues.as_array().and_then(|q| q.iter().find(|q| q["queue"] == queue.name())).cloned().expect("listed");
    assert_eq!(
        (row["ready"].clone(), row["consumers"].clone(), row["dead_letters"].clone()),
        (0.into(), 1.into(), 2.into()),
        "{row}"
    );

    let client = connect().await;
    let pending = client.submit(Request::new(Sleep { seconds: 3.0 }).queue(queue.name())).await.expect("submitted");
    wait_until("the job runs", TIMEOUT, || async { queue.ready().await == 0 }).await;
    let active = lepus_json(&["inspect", "active", "--worker", &name]);
    assert_eq!(active[&name][0]["id"], pending.id().as_str(), "{active}");
    let registered = lepus(&["inspect", "registered", "--worker", &name]);
    assert!(registered.lines().any(|l| l.ends_with("demo.sleep")), "{registered}");
    drop(pending.output(TIMEOUT).await);
    client.close().await.expect("closed");
}

#[tokio::test]
async fn lepus_revoke_stops_a_delayed_job_before_it_runs() {
    let queue = TestQueue::declare("cli-revoke").await;
    let _worker = start_worker(queue.name(), &["--name", &node("cli-revoke")]);
    queue.wait_for_consumers(1).await;
    let client = connect().await;
    let ticks = temp_file("cli-revoke");
    let job = Tick { path: ticks.clone(), sleep_ms: 0 };
    let pending =
        client.submit(Request::new(job).queue(queue.name()).delay(Duration::from_secs(3))).await.expect("sent");
    let revoked = lepus_json(&["revoke", pending.id().as_str()]);
    assert!(revoked["replies"].as_object().is_some_and(|r| !r.is_empty()), "{revoked}");
    match pending.output(TIMEOUT).await {
        Err(lepus::Error::JobRevoked { .. }) => {}
        other => panic!("expected REVOKED, got {other:?}"),
    }
    assert!(Tick::ids(&ticks).is_empty(), "it never ran");
    client.close().await.expect("closed");
}

#[tokio::test]
async fn lepus_schedules_shows_the_groups_schedules_their_next_ticks_and_the_leader() {
    let queue = TestQueue::declare("cli-schedules").await;
    let group = unique_name("cli-group");
    let path = temp_file("cli-schedules");
    let file = format!(
        "[[schedule]]\nname = \"every-second\"\ncron = \"* * * * * *\"\njob = \"demo.noop\"\nqueue = \"{}\"\n\n\
         [[schedule]]\nname = \"nightly\"\ncron = \"30 2 * * *\"\ntimezone = \"Europe/Paris\"\njob = \"demo.noop\"\nqueue = \"{}\"\n",
        queue.name(),
        queue.name()
    );
    std::fs::write(&path, file).expect("written");
    let mut cleanup = Cleanup::default();
    cleanup.queue(scheduler_leader_queue(&group));
    cleanup.queue(schedule_state_queue(&group, "every-second"));
    cleanup.queue(schedule_state_queue(&group, "nightly"));
    let mut command = Command::new(scheduler_binary());
    command.args(["run", "--schedules", &path, "--group", &group]);
    let replica = spawn(command, "cli-scheduler");
    wait_until("the replica leads", TIMEOUT, || async {
        let out = Command::new(cli_binary()).args(["--json", "schedules", "--group", &group]).output().expect("runs");
        out.status.success()
            && serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|v| v["schedules"][0]["last_fired"].is_string())
    })
    .await;
    let shown = lepus_json(&["schedules", "--group", &group]);
    assert_eq!(shown["leader"]["node"], lepus_tests::node_name(&replica), "{shown}");
    let schedules = shown["schedules"].as_array().expect("schedules");
    assert_eq!(schedules.len(), 2, "{shown}");
    let nightly = schedules.iter().find(|s| s["schedule"] == "nightly").expect("nightly");
    assert_eq!(nightly["timezone"], "Europe/Paris");
    assert_eq!(nightly["next"].as_array().map(Vec::len), Some(3), "{nightly}");
    assert!(
        nightly["next"][0].as_str().is_some_and(|t| t.contains("T01:30:00") || t.contains("T00:30:00")),
        "{nightly}"
    );
    let table = lepus(&["schedules", "--group", &group]);
    assert!(table.starts_with(&format!("group {group}: led by ")), "{table}");
    drop(replica);
}

#[tokio::test]
async fn lepus_lists_requeues_and_purges_dead_letters() {
    let queue = TestQueue::declare("cli-dlq").await;
    for _ in 0..3 {
        queue.publish(&TaskMessage::new("no.such.job", Arguments::default())).await;
    }
    let _worker = start_worker(queue.name(), &[]);
    let dlq = queue.dead_letter_queue();
    wait_until("three dead letters", TIMEOUT, || async { queue.ready_in(&dlq).await == 3 }).await;
    let q = queue.name();
    let listing = lepus(&["dead-letters", "--queue", q, "list"]);
    assert_eq!(listing.lines().count(), 4, "a heading and three rows:\n{listing}");
    assert!(listing.lines().skip(1).all(|l| l.contains("no.such.job") && l.contains("unknown-job")), "{listing}");
    let listed = lepus_json(&["dead-letters", "--queue", q, "list"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(3));
    assert_eq!(lepus(&["dead-letters", "--queue", q, "requeue", "--all"]).trim(), format!("requeued 3 to {q}"));
    wait_until("dead again", TIMEOUT, || async { queue.ready_in(&dlq).await == 3 }).await;
    assert_eq!(lepus_json(&["dead-letters", "--queue", q, "purge"])["purged"], 3);
    assert_eq!(queue.ready_in(&dlq).await, 0);
}

#[tokio::test]
async fn lepus_enqueues_calls_and_sends_batches() {
    let (queue, _worker) = lepus_tests::queue_with_worker("cli-jobs").await;
    let ticks = temp_file("ticks");
    let calls = temp_file("callback");
    let q = queue.name();
    let kwargs = format!(r#"{{"path": "{ticks}"}}"#);

    let now = lepus(&["enqueue", "test.tick", "--kwargs", &kwargs, "--queue", q]).trim().to_owned();
    let sent = std::time::Instant::now();
    let later = lepus(&["enqueue", "test.tick", "--kwargs", &kwargs, "--queue", q, "--delay", "2s"]).trim().to_owned();
    wait_until("the immediate job ran", TIMEOUT, || async { Tick::ids(&ticks).contains(&now) }).await;
    assert!(!Tick::ids(&ticks).contains(&later), "the delayed job waits");
    wait_until("the delayed job ran", TIMEOUT, || async { Tick::ids(&ticks).contains(&later) }).await;
    assert!(sent.elapsed() >= Duration::from_secs(2));

    assert_eq!(lepus(&["call", "demo.add", "--args", "[2, 3]", "--queue", q]).trim(), "5");
    assert_eq!(lepus_json(&["call", "demo.add", "--args", "[20, 22]", "--queue", q])["result"], 42);
    let mut failing = Command::new(cli_binary());
    failing.args(["call", "demo.fail", "--kwargs", r#"{"message": "nope"}"#, "--queue", q]);
    let failed = failing.env("LEPUS_AMQP_URL", lepus_tests::amqp_url()).output().expect("runs");
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("JobError: nope"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );

    let items = format!(r#"[{{"path": "{ticks}"}}, {{"path": "{ticks}"}}, {{"path": "{ticks}"}}]"#);
    let callback_kwargs = format!(r#"{{"path": "{calls}"}}"#);
    let batch = lepus(&[
        "batch",
        "test.tick",
        "--items",
        &items,
        "--queue",
        q,
        "--callback",
        "test.remember",
        "--callback-kwargs",
        &callback_kwargs,
    ]);
    let batch = batch.trim().to_owned();
    wait_until("the batch's callback ran", TIMEOUT, || async { !lepus_tests::Remember::calls(&calls).is_empty() })
        .await;
    assert_eq!(lepus(&["progress", &batch]).trim(), "total=3 done=3 failed=0 pending=0 complete=true");
    assert_eq!(lepus_json(&["progress", &batch])["done"], 3);
    assert_eq!(lepus(&["progress", &batch, "--since", "5m"]).trim(), "total=3 done=3 failed=0 pending=0 complete=true");
    assert_eq!(Tick::ids(&ticks).iter().filter(|id| id.starts_with(&batch)).count(), 3);
}

/// The queues on the broker now.
fn queues() -> BTreeSet<String> {
    rabbitmqctl(&["list_queues", "-q", "--no-table-headers", "name"]).lines().map(str::to_owned).collect()
}

/// Alone (the serial group): no other test makes queues meanwhile.
#[tokio::test]
async fn one_shot_commands_leave_no_queue_behind() {
    let (queue, _worker) = lepus_tests::queue_with_worker("cli-leftovers").await;
    let q = queue.name();
    let before = queues();
    for args in [
        vec!["status"],
        vec!["queues"],
        vec!["inspect", "stats"],
        vec!["revoke", "no-such-job"],
        vec!["call", "demo.add", "--args", "[1, 2]", "--queue", q],
        vec!["enqueue", "demo.add", "--args", "[1, 2]", "--queue", q],
        vec!["dead-letters", "--queue", q, "list"],
    ] {
        lepus(&args);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let left: Vec<String> = queues().difference(&before).cloned().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
