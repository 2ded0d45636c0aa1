//! Several broker URLs (a cluster's nodes): every program takes them as a comma-separated
//! `LEPUS_AMQP_URL` or a repeated `--amqp-url`, reaches the broker past URLs that do not answer,
//! and, when none answers, names each URL with its password masked. (Failing over between the
//! nodes of a real cluster is tested in `failover`.)

use lepus::{ClientOptions, Request, UrlOrder};
use lepus_demo::jobs::Add;
use lepus_tests::{TestQueue, amqp_url, cli_binary, scheduler_binary, start_worker_with_env, temp_file, worker_binary};
use std::process::Command;
use std::time::Duration;

/// A URL where nothing listens: connecting to it is refused at once.
fn dead(password: &str) -> String {
    format!("amqp://guest:{password}@127.0.0.1:1/%2f")
}

#[tokio::test]
async fn a_worker_a_client_and_lepus_reach_the_broker_past_a_url_that_does_not_answer() {
    let urls = format!("{},{}", dead("not-this-one"), amqp_url());
    let queue = TestQueue::declare("urls").await;
    let _worker =
        start_worker_with_env(queue.name(), &[], &[("LEPUS_AMQP_URL", &urls), ("LEPUS_AMQP_URL_ORDER", "listed")]);
    queue.wait_for_consumers(1).await;

    let options = ClientOptions::default().url_order(UrlOrder::Listed);
    let client = lepus::Client::connect_with(&urls, options).await.expect("the second URL answers");
    let sum = client.call(Request::new(Add { a: 40, b: 2 }).queue(queue.name()), Duration::from_secs(20)).await;
    assert_eq!(sum.expect("a result"), 42);
    client.close().await.expect("closed");

    let output = Command::new(cli_binary())
        .args(["--amqp-url", &dead("not-this-one"), "--amqp-url", &amqp_url(), "--amqp-url-order", "listed"])
        .args(["queues", "--queue", queue.name(), "--json"])
        .env_remove("LEPUS_AMQP_URL")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(queue.name()), "{stdout}");
}

#[test]
fn when_no_url_answers_each_is_named_with_its_password_masked() {
    let urls = format!("{},{}", dead("first-secret"), dead("second-secret").replace(":1/", ":2/"));
    let schedules = temp_file("urls-schedules");
    std::fs::write(&schedules, "[[schedule]]\nname = \"hourly\"\ncron = \"@hourly\"\njob = \"demo.noop\"\n")
        .expect("written");
    let runs = [
        (
            "worker",
            Command::new(worker_binary()).args(["--queue", "t-urls-none"]).env("LEPUS_AMQP_URL", &urls).output(),
        ),
        (
            "scheduler",
            Command::new(scheduler_binary())
                .args(["run", "--schedules", &schedules])
                .env("LEPUS_AMQP_URL", &urls)
                .output(),
        ),
        ("lepus", Command::new(cli_binary()).args(["status"]).env("LEPUS_AMQP_URL", &urls).output()),
    ];
    for (what, output) in runs {
        let output = output.expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_ne!(output.status.code(), Some(0), "{what}: {stderr}");
        for node in ["amqp://guest:***@127.0.0.1:1/%2f: ", "amqp://guest:***@127.0.0.1:2/%2f: "] {
            assert!(stderr.contains(node), "{what}: {node} missing from:\n{stderr}");
        }
        assert!(!stderr.contains("secret") && !stderr.contains("panicked"), "{what}: {stderr}");
    }
}

#[test]
fn a_repeated_flag_and_a_list_in_the_variable_give_the_same_urls_each_masked() {
    let (a, b) = ("amqp://app:pw-a@node-a:5672/%2f", "amqp://app:pw-b@node-b:5672/%2f");
    let masked = r#"amqp_url = "amqp://app:***@node-a:5672/%2f,amqp://app:***@node-b:5672/%2f""#;
    let fresh = |program| {
        let mut command = Command::new(program);
        command.env_remove("LEPUS_AMQP_URL").env_remove("LEPUS_CONFIG");
        command
    };
    let print = |mut command: Command| {
        let output = command.output().expect("runs");
        assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let mut by_flags = fresh(worker_binary());
    by_flags.args(["--amqp-url", a, "--amqp-url", b, "--amqp-url-order", "listed", "--print-config"]);
    let mut by_variable = fresh(worker_binary());
    by_variable.env("LEPUS_AMQP_URL", format!("{a}, {b}")).env("LEPUS_AMQP_URL_ORDER", "listed").arg("--print-config");
    let schedules = temp_file("urls-schedules");
    std::fs::write(&schedules, "").expect("written");
    let mut scheduler = fresh(scheduler_binary());
    scheduler.args(["run", "--schedules", &schedules, "--amqp-url", a, "--amqp-url", b, "--print-config"]);
    for shown in [print(by_flags), print(by_variable), print(scheduler)] {
        assert!(shown.lines().any(|line| line == masked), "{shown}");
        assert!(!shown.contains("pw-"), "{shown}");
    }
}
