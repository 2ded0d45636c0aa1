//! The Python Celery environment of the interop tests: a virtualenv with the pinned Celery from
//! `tests/python/requirements.txt`, made once per target directory (or `LEPUS_PYTHON`, a
//! Python that already has it).

use crate::queues::amqp_url;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The folder holding the Python test programs.
#[must_use]
pub fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// A Python interpreter with Celery installed, creating the virtualenv on first use. Concurrent
/// test processes serialize on a lock file, so it is made once.
#[must_use]
pub fn celery_python() -> PathBuf {
    if let Ok(python) = std::env::var("LEPUS_PYTHON") {
        return PathBuf::from(python);
    }
    let target = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .expect("tests run from target/<profile>/deps");
    let venv = target.join("celery-venv");
    let python = venv.join("bin").join("python");
    let requirements = python_dir().join("requirements.txt");
    let stamp = venv.join("installed-requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).expect("requirements.txt");

    let lock = std::fs::File::create(target.join("celery-venv.lock")).expect("lock file");
    lock.lock().expect("lock the virtualenv");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv));
        run(Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements));
        std::fs::write(&stamp, &wanted).expect("stamp");
    }
    drop(lock);
    python
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?} cannot start: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs a script from `tests/python` against `queue` (`LEPUS_TEST_QUEUE`) with more environment
/// variables; returns its standard output's JSON lines, and fails the test if it fails.
pub async fn run_python_with(script: &'static str, queue: &str, env: &[(&str, &str)]) -> Vec<Value> {
    let python = celery_python();
    let name = queue.to_owned();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .current_dir(python_dir())
            .env("LEPUS_TEST_QUEUE", name)
            .env("LEPUS_AMQP_URL", amqp_url())
            .envs(env)
            .output()
            .expect("python runs")
    })
    .await
    .expect("joined");
    json_lines(script, &output)
}

/// Runs Celery's own command line, `celery --broker <test broker> <args>` (no app module).
pub async fn celery_command(args: &[&str]) -> Output {
    let python = celery_python();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(python).args(["-m", "celery", "--broker", &amqp_url()]).args(args).output().expect("celery runs")
    })
    .await
    .expect("joined")
}

/// Runs a script from `tests/python` with command-line `args` (and `LEPUS_AMQP_URL`); returns its
/// standard output's JSON lines, and fails the test if it fails.
pub async fn run_python_args(script: &'static str, args: &[&str]) -> Vec<Value> {
    let python = celery_python();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args(args)
            .current_dir(python_dir())
            .env("LEPUS_AMQP_URL", amqp_url())
            .output()
            .expect("python runs")
    })
    .await
    .expect("joined");
    json_lines(script, &output)
}

/// A script's standard output as JSON lines; fails the test if the script failed.
fn json_lines(script: &str, output: &Output) -> Vec<Value> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{script} failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}
