//! `lepus-demo events` against the real broker: it exits 0 once each of its three services
//! handled each of its events once (billing and analytics both events of each order, shipping
//! each `orders.paid`), says so in its summary, and leaves none of its queues behind.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn the_events_demo_fans_every_order_event_out_to_its_services_and_cleans_up() {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_lepus-demo"))
        .args(["events", "--orders", "50", "--timeout", "60s"])
        .output()
        .expect("lepus-demo runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(started.elapsed() < Duration::from_secs(90), "took {:?}", started.elapsed());
    for line in [
        "billing   handled 100/100 events: 50/50 orders.created, 50/50 orders.paid; 0 dead letters",
        "shipping  handled 50/50 events: 0/0 orders.created, 50/50 orders.paid; 0 dead letters",
        "analytics handled 100/100 events: 50/50 orders.created, 50/50 orders.paid; 0 dead letters",
        "Every service handled each of its events once",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    // What the services declared is gone: their queues, shipping's partitions and exchanges.
    let pid = output_pid(&stdout);
    let deleted = stdout.lines().skip_while(|l| !l.starts_with("Stopping the services")).collect::<Vec<_>>().join("\n");
    for queue in [
        format!("lepus.service.lepus-demo-{pid}-billing"),
        format!("lepus.service.lepus-demo-{pid}-billing.dlq"),
        format!("lepus.service.lepus-demo-{pid}-shipping.p3"),
        format!("exchange lepus.service.lepus-demo-{pid}-shipping"),
        format!("exchange lepus.service.lepus-demo-{pid}-shipping.unslotted"),
        format!("lepus.service.lepus-demo-{pid}-analytics.dlq"),
    ] {
        assert!(deleted.contains(&queue), "{queue} not deleted:\n{deleted}");
    }
}

/// The demo's process id, from the name of its first service queue.
fn output_pid(stdout: &str) -> String {
    let start = stdout.find("lepus.service.lepus-demo-").expect("a service queue") + "lepus.service.lepus-demo-".len();
    stdout[start..].chars().take_while(char::is_ascii_digit).collect()
}
