//! With no broker reachable, `lepus-demo` exits at once with one paragraph that says how to start
//! one: no stack trace, no password, no worker left behind.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn without_a_broker_the_demo_exits_with_one_paragraph_on_how_to_start_one() {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_lepus-demo"))
        .env("LEPUS_AMQP_URL", "amqp://guest:secret@127.0.0.1:1/%2f")
        .output()
        .expect("lepus-demo runs");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|line| !line.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one paragraph, on one line:\n{stderr}");
    for hint in ["not reachable at amqp://guest:***@127.0.0.1:1", "rabbitmq-server", "LEPUS_AMQP_URL"] {
        assert!(stderr.contains(hint), "{hint:?} missing from:\n{stderr}");
    }
    for noise in ["secret", "panicked", "backtrace", "Error {"] {
        assert!(!stderr.contains(noise), "{noise:?} in:\n{stderr}");
    }
}
