//! Processes the tests start, on the harness the demo shares ([`lepus_demo::process`]): the
//! `lepus-test-worker` binary (the `lepus-worker` command line with the demo jobs and the tests'
//! jobs) and the `lepus-test-scheduler` binary, each logging to a file of its own.

use super::queues::{TestQueue, amqp_url, unique_name};
use lepus_demo::process::Process;
use std::path::PathBuf;
use std::process::Command;

/// Starts a worker consuming `queue` with the given extra command-line arguments.
#[must_use]
pub fn start_worker(queue: &str, args: &[&str]) -> Process {
    start_worker_with_env(queue, args, &[])
}

/// Declares a queue named after `what`, starts a worker on it and waits until it consumes. Bind
/// the pair as `let (queue, _worker) = …`: the worker then stops before its queue is deleted.
pub async fn queue_with_worker(what: &str) -> (TestQueue, Process) {
    let queue = TestQueue::declare(what).await;
    let worker = start_worker(queue.name(), &[]);
    queue.wait_for_consumers(1).await;
    (queue, worker)
}

/// Like [`start_worker`], with extra environment variables.
#[must_use]
pub fn start_worker_with_env(queue: &str, args: &[&str], env: &[(&str, &str)]) -> Process {
    let mut command = Command::new(worker_binary());
    command.args(["--queue", queue]).args(args).env("RUST_LOG", "info").envs(env.iter().copied());
    spawn(command, queue)
}

/// Starts any program (a scheduler, a Python Celery worker), with `LEPUS_AMQP_URL` set unless the
/// command sets it, logging to a file named after `label`.
#[must_use]
pub fn spawn(mut command: Command, label: &str) -> Process {
    if !command.get_envs().any(|(key, _)| key == "LEPUS_AMQP_URL") {
        command.env("LEPUS_AMQP_URL", amqp_url());
    }
    let log = std::env::temp_dir().join("lepus-tests").join(format!("{}.log", unique_name(label)));
    Process::start(command, label, log).unwrap_or_else(|e| panic!("{label}: {e}"))
}

/// The node name a process's results and announcements carry (`host:pid`).
#[must_use]
pub fn node_name(process: &Process) -> String {
    let own = lepus::internal::node_name();
    let host = own.rsplit_once(':').map_or(own, |(host, _)| host);
    format!("{host}:{}", process.pid())
}

/// `lepus-test-worker`, built by Cargo next to the test executables.
#[must_use]
pub fn worker_binary() -> PathBuf {
    sibling("lepus-test-worker")
}

/// `lepus-test-subscriber` (one service's event subscription), built next to the tests.
#[must_use]
pub fn subscriber_binary() -> PathBuf {
    sibling("lepus-test-subscriber")
}

/// `lepus-test-cli` (the `lepus` command line), built next to the tests.
#[must_use]
pub fn cli_binary() -> PathBuf {
    sibling("lepus-test-cli")
}

/// `lepus-test-scheduler` (the `lepus-scheduler` command line), built next to the tests.
#[must_use]
pub fn scheduler_binary() -> PathBuf {
    sibling("lepus-test-scheduler")
}

fn sibling(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().expect("current exe");
    let profile_dir = test_exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps layout");
    profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}
