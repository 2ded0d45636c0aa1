//! Settings of `lepus-worker` and `lepus-scheduler run`: a flag beats a `LEPUS_*` variable, which
//! beats the settings file, which beats the default; `--print-config` shows the result with the
//! password masked; every bad key or value is named in one error, and the process exits 2 before
//! it connects to anything.

use lepus_tests::{scheduler_binary, temp_file, worker_binary};
use std::process::{Command, Output};

fn run(mut command: Command, file: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("LEPUS_")) {
        command.env_remove(name);
    }
    command.env("LEPUS_CONFIG", file).envs(env.iter().copied()).args(args).output().expect("runs")
}

fn written(what: &str, text: &str) -> String {
    let path = temp_file(what);
    std::fs::write(&path, text).expect("written");
    path
}

#[test]
fn a_flag_beats_a_variable_beats_the_file_beats_the_default_and_the_password_is_masked() {
    let file = written(
        "worker-settings",
        "amqp_url = \"amqp://app:s3cret@broker.example:5672/%2f\"\nconcurrency = 4\ngrace_period = \"1m\"\nqueues = [\"from-file\"]\n",
    );
    let env = [("LEPUS_CONCURRENCY", "8"), ("LEPUS_QUEUES", "env-a,env-b")];
    let output = run(Command::new(worker_binary()), &file, &env, &["--concurrency", "12", "--print-config"]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let shown = String::from_utf8_lossy(&output.stdout);
    let line = |key: &str| shown.lines().find(|l| l.starts_with(&format!("{key} = "))).unwrap_or("").to_owned();
    assert_eq!(line("concurrency"), "concurrency = 12", "flag over variable:\n{shown}");
    assert_eq!(line("queues"), r#"queues = ["env-a", "env-b"]"#, "variable over file:\n{shown}");
    assert_eq!(line("grace_period"), r#"grace_period = "1m""#, "file over default:\n{shown}");
    assert_eq!(line("delivery_limit"), "delivery_limit = 5", "default:\n{shown}");
    assert_eq!(line("amqp_url"), r#"amqp_url = "amqp://app:***@broker.example:5672/%2f""#, "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");

    // What --print-config shows is a settings file that gives the same settings again.
    let again = written("worker-settings-again", &shown);
    let output = run(Command::new(worker_binary()), &again, &[], &["--print-config"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), shown);
}

#[test]
fn every_bad_worker_setting_is_named_in_one_error_with_its_source() {
    let file = written("bad-worker-settings", "concurency = 4\ngrace_period = \"30 parsecs\"\nqueues = []\n");
    let env = [("LEPUS_DELIVERY_LIMIT", "0"), ("LEPUS_MAX_PAYLOAD", "huge")];
    let started = std::time::Instant::now();
    let output = run(Command::new(worker_binary()), &file, &env, &["--broker-timeout", "forever"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid configuration (6 problems)"), "{stderr}");
    for expected in [
        "concurency: not a setting (in ",
        "grace_period: `30 parsecs` is not a duration",
        "max_payload: `huge` is not a whole number from 0 to",
        "(from LEPUS_MAX_PAYLOAD)",
        "broker_timeout: `forever` is not a duration",
        "(from --broker-timeout)",
        "queues: no queue to consume",
        "delivery_limit: must be at least 1",
    ] {
        assert!(stderr.contains(expected), "{expected:?} missing from:\n{stderr}");
    }
    assert!(started.elapsed().as_secs() < 5, "refused before connecting");
}

#[test]
fn the_event_stream_retention_and_a_replay_start_are_settings_and_a_bad_start_is_named() {
    let file = written("worker-event-settings", "event_log_max_age = \"3days\"\nqueues = [\"q\"]\n");
    let env = [("LEPUS_REPLAY_FROM", "2026-03-01T13:00:00+01:00")];
    let output =
        run(Command::new(worker_binary()), &file, &env, &["--event-log-max-bytes", "1073741824", "--print-config"]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let shown = String::from_utf8_lossy(&output.stdout);
    for expected in [
        r#"event_log_max_age = "3days""#,
        "event_log_max_bytes = 1073741824",
        r#"replay_from = "2026-03-01T13:00:00+01:00""#,
    ] {
        assert!(shown.lines().any(|l| l == expected), "{expected:?} missing from:\n{shown}");
    }
    let output = run(Command::new(worker_binary()), &file, &[], &["--replay-from", "yesterday"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("replay_from: replay from \"yesterday\": `first` or an RFC 3339 time"), "{stderr}");
}

#[test]
fn every_bad_scheduler_setting_and_schedule_is_named_in_one_error() {
    let schedules =
        written("bad-schedules", "[[schedule]]\nname = \"broken\"\ncron = \"every tuesday\"\njob = \"demo.noop\"\n");
    let file = written(
        "bad-scheduler-settings",
        &format!("schedules = \"{schedules}\"\nheartbeat = \"0s\"\ngroup = \"has space\"\n"),
    );
    let output = run(Command::new(scheduler_binary()), &file, &[("LEPUS_LOG_FORMAT", "xml")], &["run"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "invalid configuration (4 problems)",
        "log_format: unknown log format \"xml\"",
        "group: ",
        "heartbeat: the heartbeat must be between 1 s and 10 min",
        r#"schedules: schedule #1 ("broken"): invalid cron expression"#,
    ] {
        assert!(stderr.contains(expected), "{expected:?} missing from:\n{stderr}");
    }

    let good = written("good-schedules", "[[schedule]]\nname = \"hourly\"\ncron = \"@hourly\"\njob = \"demo.noop\"\n");
    let output = run(
        Command::new(scheduler_binary()),
        &file,
        &[("LEPUS_SCHEDULES", &good), ("LEPUS_SCHEDULER_GROUP", "ops")],
        &["run", "--heartbeat", "3s", "--print-config"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(shown.contains("group = \"ops\"\n") && shown.contains("heartbeat = \"3s\"\n"), "{shown}");
    assert!(shown.contains(&format!("schedules = \"{good}\"\n")), "{shown}");
}

#[test]
fn a_metrics_address_in_use_stops_the_worker_at_start_up() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = taken.local_addr().expect("its address").to_string();
    let file = written("no-settings", "");
    let output = run(Command::new(worker_binary()), &file, &[], &["--metrics-addr", &address]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("cannot serve /metrics, /livez and /readyz on {address}")), "{stderr}");
}
