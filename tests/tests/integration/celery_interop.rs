//! Celery interop with the real Python Celery: a Python client calls Lepus jobs through `rpc://`,
//! and a Lepus client calls tasks run by a Python Celery worker.

use lepus::protocol::{Arguments, TaskMessage};
use lepus::{Error, Job, Request};
use lepus_tests::{TestQueue, Tick, celery_python, connect, python_dir, run_python_with, temp_file, wait_until};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_python_celery_client_gets_lepus_results_and_failures() {
    let (queue, _worker) = lepus_tests::queue_with_worker("py-to-lepus").await;

    let lines = run_python("call_lepus.py", queue.name()).await;

    assert_eq!(lines[0], json!({"job": "demo.add", "state": "SUCCESS", "value": 5}));
    assert_eq!(lines[1], json!({"job": "demo.add kwargs", "state": "SUCCESS", "value": 42}));
    assert_eq!(lines[2]["state"], "FAILURE");
    assert_eq!(lines[2]["error"], "it broke on purpose");
    assert_eq!(lines[2]["error_type"], "JobError");
}

#[tokio::test]
async fn a_python_client_catches_the_exception_class_a_lepus_handler_names() {
    let (queue, _worker) = lepus_tests::queue_with_worker("py-exceptions").await;

    let lines = run_python("exceptions.py", queue.name()).await;

    assert_eq!(lines[0], json!({"caught": "ValueError", "message": "width must be positive"}));
    // A bare class name: Celery makes up a class of that name; the message carries the cause.
    assert_eq!(lines[1], json!({"caught": "other", "type": "ImageTooLarge", "message": "too big: 4096 > 2048"}));
}

#[tokio::test]
async fn python_celery_delayed_jobs_reach_lepus_through_the_shared_cascade() {
    let (queue, _worker) = lepus_tests::queue_with_worker("py-delayed").await;
    let lines = run_python("delayed_call.py", queue.name()).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        assert_eq!(line["value"], 42, "{line}");
        let seconds = line["seconds"].as_f64().expect("seconds");
        // Celery rounds the countdown down to whole seconds; Lepus never runs a job before its eta.
        assert!((2.0..4.0).contains(&seconds), "{line}");
    }
    assert_eq!(lines[0]["case"], "native");
    assert_eq!(lines[1]["case"], "eta");
}

/// Runs a script from `tests/python` against `queue`; returns its JSON output lines.
async fn run_python(script: &'static str, queue: &str) -> Vec<Value> {
    run_python_with(script, queue, &[]).await
}

#[tokio::test]
async fn celery_chains_links_and_error_links_run_on_lepus_workers() {
    let queue = TestQueue::declare("canvas").await;
    let links = TestQueue::declare("canvas-links").await;
    let ticks = temp_file("canvas-ticks");
    let _workers: Vec<_> = (0..2).map(|_| lepus_tests::start_worker(queue.name(), &[])).collect();
    queue.wait_for_consumers(2).await;

    let env = [("LEPUS_TEST_LINKS", links.name()), ("LEPUS_TEST_TICKS", ticks.as_str())];
    let lines = run_python_with("canvas.py", queue.name(), &env).await;

    assert_eq!(lines[0], json!({"case": "chain", "state": "SUCCESS", "value": 16}), "(2 + 2) + 4 + 8");
    assert_eq!((&lines[1]["case"], &lines[1]["value"]), (&json!("link"), &json!(3)));
    assert_eq!((&lines[2]["state"], &lines[2]["message"]), (&json!("FAILURE"), &json!("broken on purpose")));
    // The chain stops at the failing step, and the caller awaiting its last step gets the failure.
    assert_eq!(
        lines[3],
        json!({"case": "broken chain", "state": "FAILURE", "type": "JobError", "message": "the middle fails"})
    );

    // What the Lepus workers sent to the links queue: the link with the result first, the error
    // link with the failed job's id first, each a child of its job.
    wait_until("the link and the error link arrive", TIMEOUT, || async { links.ready().await >= 2 }).await;
    tokio::time::sleep(Duration::from_secs(1)).await; // a third message would show up now
    let sent: Vec<TaskMessage> = links
        .take_all(links.name())
        .await
        .iter()
        .map(|d| TaskMessage::decode(&d.properties, &d.data).expect("a Celery message"))
        .collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    let link = sent.iter().find(|m| m.task == "py.record").expect("the link");
    assert_eq!(link.arguments.args, [json!(3)]);
    assert_eq!(link.parent_id.as_deref(), lines[1]["id"].as_str());
    let errback = sent.iter().find(|m| m.task == "py.on_error").expect("the error link");
    assert_eq!(errback.arguments.args, [lines[2]["id"].clone()]);
    assert_eq!(errback.parent_id.as_deref(), lines[2]["id"].as_str());
    assert!(Tick::ids(&ticks).is_empty(), "nothing after the failing step ran");
    assert_eq!(queue.ready().await, 0);
}

/// The Python task `py.multiply(a, b)`, seen from Rust: a tuple struct maps to positional args.
#[derive(Serialize, Deserialize)]
struct Multiply(i64, i64);

impl Job for Multiply {
    const NAME: &'static str = "py.multiply";
    type Output = i64;
}

#[tokio::test]
async fn a_lepus_client_calls_tasks_run_by_a_python_celery_worker() {
    let queue = TestQueue::declare("lepus-to-py").await;
    let mut command = Command::new(celery_python());
    command
        .args(["-m", "celery", "-A", "celery_app", "worker", "--pool", "solo", "--loglevel", "INFO"])
        .args(["--without-gossip", "--without-mingle", "--without-heartbeat", "--queues", queue.name()])
        .current_dir(python_dir())
        .env("LEPUS_TEST_QUEUE", queue.name());
    let celery = lepus_tests::spawn(command, "celery-worker");
    queue.wait_for_consumers(1).await;
    let client = connect().await;

    let typed = client.call(Request::new(Multiply(6, 7)).queue(queue.name()), TIMEOUT).await;
    assert_eq!(typed.unwrap_or_else(|e| panic!("{e}; celery log:\n{}", celery.log())), 42);

    let raw = Arguments { args: vec![], kwargs: json!({"a": 3, "b": 5}).as_object().cloned().unwrap_or_default() };
    let untyped: Value = client.call(Request::task("py.multiply", raw).queue(queue.name()), TIMEOUT).await.expect("15");
    assert_eq!(untyped, json!(15));

    let fail = Arguments { args: vec![json!("bad input")], kwargs: Default::default() };
    match client.call(Request::task("py.fail", fail).queue(queue.name()), TIMEOUT).await {
        Err(Error::JobFailed { exception, traceback, .. }) => {
            assert_eq!(exception.exc_type, "ValueError");
            assert_eq!(exception.exc_module.as_deref(), Some("builtins"), "the Python exception's class, in full");
            assert_eq!(exception.message(), "bad input");
            assert!(traceback.is_some_and(|t| t.contains("ValueError")), "Celery sends its traceback");
        }
        other => panic!("expected the Python ValueError, got {other:?}"),
    }
    client.close().await.expect("closed");
}
