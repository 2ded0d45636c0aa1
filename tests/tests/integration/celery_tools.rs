//! Celery's own tools on Lepus workers, from the PyPI Celery and Flower of the test venv:
//! `celery inspect` and `celery control` (ping, registered, active, revoke, shutdown), Celery's
//! events seen by a kombu consumer as `celery events` sees them, and Flower's API and pages.

use lepus::Request;
use lepus_demo::jobs::Sleep;
use lepus_tests::{
    Process, TestQueue, amqp_url, celery_command, celery_python, connect, free_address, http_get, python_dir,
    run_python_with, spawn, start_worker, temp_file, unique_name, wait_until,
};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A node name no other test uses.
fn node(what: &str) -> String {
    format!("{}@lepus-tests", unique_name(what))
}

/// `celery inspect <command> --destination <node> --json`: the reply of `node`.
async fn inspect(command: &str, node: &str) -> Value {
    let output = celery_command(&["inspect", command, "--destination", node, "--json", "--timeout", "5"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "celery inspect {command}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    let replies: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    replies[node].clone()
}

#[tokio::test]
async fn celery_inspect_pings_lists_the_jobs_and_shows_a_running_job() {
    let queue = TestQueue::declare("inspect").await;
    let name = node("inspect");
    let _worker = start_worker(queue.name(), &["--name", &name]);
    queue.wait_for_consumers(1).await;

    assert_eq!(inspect("ping", &name).await, json!({"ok": "pong"}));
    let registered = inspect("registered", &name).await;
    for job in ["demo.add", "demo.sleep", "test.flaky"] {
        assert!(registered.as_array().is_some_and(|jobs| jobs.contains(&json!(job))), "{job} in {registered}");
    }
    let queues = inspect("active_queues", &name).await;
    assert_eq!(queues[0]["name"], queue.name(), "{queues}");

    let client = connect().await;
    let pending = client.submit(Request::new(Sleep { seconds: 4.0 }).queue(queue.name())).await.expect("submitted");
    wait_until("the job runs", TIMEOUT, || async { queue.ready().await == 0 }).await;
    let active = inspect("active", &name).await;
    let running = active.as_array().and_then(|jobs| jobs.first()).cloned().unwrap_or_default();
    assert_eq!(running["name"], "demo.sleep", "{active}");
    assert_eq!(running["id"], pending.id().as_str(), "{active}");
    assert_eq!(running["kwargs"], json!({"seconds": 4.0}), "{active}");
    assert_eq!(running["hostname"], name.as_str(), "{active}");
    assert_eq!(pending.output(TIMEOUT).await.expect("slept"), 4.0);
    let stats = inspect("stats", &name).await;
    assert_eq!(stats["total"]["demo.sleep"], 1, "{stats}");
    assert_eq!(stats["pool"]["max-concurrency"], 16, "{stats}");
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_delayed_job_revoked_by_celery_control_or_lepus_revoke_never_runs_and_its_python_caller_gets_task_revoked() {
    let queue = TestQueue::declare("revoke-py").await;
    let _worker = start_worker(queue.name(), &["--name", &node("revoke-py")]);
    queue.wait_for_consumers(1).await;
    let lepus = lepus_tests::cli_binary().display().to_string();
    for revoke_with in [vec![], vec![("LEPUS_REVOKE_COMMAND", lepus.as_str())]] {
        let lines = run_python_with("revoke_delayed.py", queue.name(), &revoke_with).await;
        assert_eq!(lines[0]["state"], "REVOKED", "{revoke_with:?}: {lines:?}");
        assert_eq!(lines[0]["error_type"], "TaskRevokedError", "{revoke_with:?}: {lines:?}");
    }
    assert_eq!(queue.ready().await, 0, "acked");
}

#[tokio::test]
async fn celery_control_shutdown_stops_that_worker_gracefully_with_exit_code_zero() {
    let queue = TestQueue::declare("shutdown").await;
    let (name, other) = (node("shutdown"), node("stays"));
    let mut worker = start_worker(queue.name(), &["--name", &name]);
    let mut stays = start_worker(queue.name(), &["--name", &other]);
    queue.wait_for_consumers(2).await;
    let output = celery_command(&["control", "shutdown", "--destination", &name, "--timeout", "5"]).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let status = worker.wait_exit(TIMEOUT).await.expect("the worker exits");
    assert_eq!(status.code(), Some(0), "{}", worker.log());
    assert!(stays.exit_status().is_none(), "the other worker goes on");
    assert_eq!(inspect("ping", &other).await, json!({"ok": "pong"}));
    stays.kill();
}

/// A kombu consumer of `celeryev` (as `celery events` is), writing each event to a file.
async fn events_listener() -> (Process, String) {
    let file = temp_file("events");
    let mut command = Command::new(celery_python());
    command.arg("events_dump.py").arg(amqp_url()).arg(&file).current_dir(python_dir());
    let log = std::env::temp_dir().join("lepus-tests").join(format!("{}.log", unique_name("events-dump")));
    let (process, mut lines) = Process::start_reading_stdout(command, "events", log).expect("the listener starts");
    let listening = tokio::time::timeout(TIMEOUT, async {
        while let Some((line, _)) = lines.recv().await {
            if line == "listening" {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(listening, Ok(true), "{}", process.log());
    (process, file)
}

fn events_in(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
}

#[tokio::test]
async fn a_worker_with_events_sends_each_event_type_a_monitor_reads() {
    let queue = TestQueue::declare("events").await;
    let (_listener, file) = events_listener().await;
    let name = node("events");
    let mut worker = start_worker(queue.name(), &["--name", &name, "--events"]);
    queue.wait_for_consumers(1).await;
    let client = connect().await;
    let q = queue.name();

    let add = client.submit(Request::task("demo.add", lepus::protocol::Arguments::positional([2, 3])).queue(q)).await;
    let fail = client.submit(Request::new(lepus_demo::jobs::Fail { message: "boom".into() }).queue(q)).await;
    let flaky = lepus_tests::Flaky { fail_times: 1, record: temp_file("events-flaky"), ..Default::default() };
    let retried = client.submit(Request::new(flaky).queue(q)).await;
    let unknown = client.submit(Request::task("no.such.job", Default::default()).queue(q)).await;
    let delayed = client.submit(Request::new(Sleep { seconds: 0.1 }).queue(q).delay(Duration::from_secs(2))).await;
    let revoked_id = delayed.as_ref().expect("submitted").id().to_string();
    let mut mailbox = lepus::control::Mailbox::open(client.broker()).await.expect("a mailbox");
    let mut arguments = serde_json::Map::new();
    arguments.insert("task_id".into(), json!([revoked_id]));
    mailbox.cast("revoke", arguments, lepus::control::Nodes::All).await.expect("revoked");
    mailbox.close().await;
    for pending in [add.map(|p| p.id().clone()), fail.map(|p| p.id().clone())] {
        drop(pending.expect("submitted"));
    }
    drop(retried.expect("submitted").result_message(TIMEOUT).await);
    drop(unknown.expect("submitted").result_message(TIMEOUT).await);
    drop(delayed.expect("submitted").result_message(TIMEOUT).await);

    let wanted = [
        "worker-online",
        "worker-heartbeat",
        "task-received",
        "task-started",
        "task-succeeded",
        "task-failed",
        "task-retried",
        "task-rejected",
        "task-revoked",
    ];
    let kinds = |events: &[Value]| -> BTreeSet<String> {
        events
            .iter()
            .filter(|e| e["hostname"] == name.as_str())
            .filter_map(|e| e["type"].as_str())
            .map(str::to_owned)
            .collect()
    };
    wait_until("every event type arrives", TIMEOUT, || async {
        wanted.iter().all(|k| kinds(&events_in(&file)).contains(*k))
    })
    .await;
    let events = events_in(&file);
    let of = |kind: &str| {
        events.iter().filter(|e| e["type"] == kind && e["hostname"] == name.as_str()).cloned().collect::<Vec<_>>()
    };
    let added = of("task-received").into_iter().find(|e| e["name"] == "demo.add").expect("demo.add received");
    assert_eq!(added["args"], "(2, 3)");
    let succeeded = of("task-succeeded").into_iter().find(|e| e["uuid"] == added["uuid"]).expect("it succeeded");
    assert_eq!(succeeded["result"], "5");
    assert!(succeeded["runtime"].as_f64().is_some(), "{succeeded}");
    assert!(of("task-failed").iter().any(|e| e["exception"] == "JobError('boom')"), "{:?}", of("task-failed"));
    assert!(of("task-revoked").iter().any(|e| e["uuid"] == revoked_id.as_str()), "{:?}", of("task-revoked"));
    let heartbeat = of("worker-heartbeat").pop().expect("a heartbeat");
    for field in ["active", "processed", "loadavg", "freq", "sw_ident", "sw_ver", "sw_sys", "clock", "timestamp", "pid"]
    {
        assert!(!heartbeat[field].is_null(), "{field} in {heartbeat}");
    }

    worker.terminate().expect("SIGTERM");
    assert_eq!(worker.wait_exit(TIMEOUT).await.and_then(|s| s.code()), Some(0));
    wait_until("worker-offline arrives", TIMEOUT, || async { kinds(&events_in(&file)).contains("worker-offline") })
        .await;
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_worker_without_events_sends_none() {
    let queue = TestQueue::declare("no-events").await;
    let (_listener, file) = events_listener().await;
    let name = node("no-events");
    let _worker = start_worker(queue.name(), &["--name", &name]);
    queue.wait_for_consumers(1).await;
    let client = connect().await;
    let sum = client
        .call(Request::task("demo.add", lepus::protocol::Arguments::positional([1, 1])).queue(queue.name()), TIMEOUT);
    assert_eq!(sum.await.expect("a result"), json!(2));
    tokio::time::sleep(Duration::from_secs(3)).await; // past a heartbeat
    assert!(events_in(&file).iter().all(|e| e["hostname"] != name.as_str()), "{:?}", events_in(&file));
    client.close().await.expect("closed");
}

#[tokio::test]
async fn flower_shows_a_lepus_worker_and_its_jobs() {
    let queue = TestQueue::declare("flower").await;
    let name = node("flower");
    // Without --events: Flower turns them on itself (enable_events).
    let _worker = start_worker(queue.name(), &["--name", &name]);
    queue.wait_for_consumers(1).await;
    let address = free_address();
    let mut command = Command::new(celery_python());
    command.args(["-m", "celery", "--broker", &amqp_url(), "flower", "--address=127.0.0.1"]);
    command.arg(format!("--port={}", address.port())).env("FLOWER_UNAUTHENTICATED_API", "true");
    let flower = spawn(command, "flower");
    let api = |path: &str| http_get(&format!("http://{address}{path}"));
    // Inspection (`/api/workers`) finds the worker at once; its events follow once Flower's
    // `enable_events` reached it, and Flower's workers list is made of those.
    wait_until("Flower inspects the worker", Duration::from_secs(60), || async {
        api("/api/workers?refresh=1").is_some_and(|(status, body)| status == 200 && body.contains(&name))
    })
    .await;
    wait_until("the worker's events reach Flower", TIMEOUT, || async {
        api("/workers?json=1").is_some_and(|(status, body)| status == 200 && body.contains(&name))
    })
    .await;

    let results = run_python_with("send_adds.py", queue.name(), &[("LEPUS_TEST_JOBS", "10")]).await;
    let ids: Vec<String> = results[0]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids.len(), 10);
    let tasks =
        || -> Value { api("/api/tasks").and_then(|(_, body)| serde_json::from_str(&body).ok()).unwrap_or_default() };
    wait_until("Flower has the 10 jobs as SUCCESS", TIMEOUT, || async {
        let tasks = tasks();
        ids.iter().all(|id| tasks[id]["state"] == "SUCCESS")
    })
    .await;
    let tasks = tasks();
    let one = &tasks[&ids[3]];
    assert_eq!(one["name"], "demo.add", "{one}");
    assert_eq!(one["args"], "(3, 3)", "{one}");
    assert_eq!(one["result"], "6", "{one}");
    assert!(one["runtime"].as_f64().is_some(), "{one}");
    assert_eq!(one["worker"], name.as_str(), "{one}");
    let processed = || -> Value {
        let workers = api(&format!("/api/workers?refresh=1&workername={name}"));
        let workers: Value = workers.and_then(|(_, body)| serde_json::from_str(&body).ok()).unwrap_or_default();
        workers[&name]["stats"]["total"]["demo.add"].clone()
    };
    wait_until("Flower's stats count the 10 jobs", TIMEOUT, || async { processed() == json!(10) }).await;

    // The workers page, rendered by a real browser, names the worker.
    let page = chromium_dom(&format!("http://{address}/workers"));
    if !page.contains(&name) {
        let shot = chromium_screenshot(&format!("http://{address}/workers"));
        panic!(
            "the workers page does not name {name}; screenshot kept at {shot}; Flower log:\n{}",
            flower.log_tail(30)
        );
    }
}

/// The DOM of `url` after headless Chromium ran its scripts.
fn chromium_dom(url: &str) -> String {
    let output = chromium()
        .args(["--virtual-time-budget=5000", "--dump-dom", url])
        .output()
        .expect("chromium runs (Debian package chromium)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A screenshot of `url`, kept in the temporary directory; its path.
fn chromium_screenshot(url: &str) -> String {
    let path = format!("{}.png", temp_file("flower-workers"));
    drop(
        chromium()
            .arg(format!("--screenshot={path}"))
            .args(["--window-size=1280,900", "--virtual-time-budget=5000", url])
            .output(),
    );
    path
}

fn chromium() -> Command {
    let profile = temp_file("chromium-profile");
    let mut command = Command::new("chromium");
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]);
    command.arg(format!("--user-data-dir={profile}"));
    command
}
