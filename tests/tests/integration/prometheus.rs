//! A real Prometheus server (Debian's `prometheus`) scrapes a worker and two scheduler replicas,
//! with the alert rules of `deploy/prometheus/alerts.yaml` loaded: its API counts the jobs the
//! worker ran, sees exactly one leader, evaluates every rule without error (none of them fires on
//! this healthy system), and every query of the Grafana dashboard parses and, for Lepus's own
//! metrics, finds series.

use lepus::Request;
use lepus_demo::jobs::Add;
use lepus_tests::{
    Cleanup, Process, TestQueue, connect, free_address, http_get, scheduler_binary, spawn, start_worker, temp_file,
    unique_name, wait_until,
};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

fn deploy_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(path)
}

/// A Prometheus server scraping the worker at `worker` and the schedulers at `schedulers` every
/// second, with Lepus's alert rules.
fn prometheus(address: SocketAddr, worker: SocketAddr, schedulers: [SocketAddr; 2]) -> Process {
    let dir = temp_file("prometheus");
    std::fs::create_dir_all(&dir).expect("a directory");
    let rules = deploy_file("prometheus/alerts.yaml");
    let config = format!(
        "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
         rule_files: [\"{}\"]\n\
         scrape_configs:\n\
         \x20 - job_name: lepus-worker\n    static_configs: [{{ targets: [\"{worker}\"] }}]\n\
         \x20 - job_name: lepus-scheduler\n    static_configs: [{{ targets: [\"{}\", \"{}\"] }}]\n",
        rules.display(),
        schedulers[0],
        schedulers[1],
    );
    let file = format!("{dir}/prometheus.yml");
    std::fs::write(&file, config).expect("written");
    let mut command = Command::new("prometheus");
    command.args([
        format!("--config.file={file}"),
        format!("--storage.tsdb.path={dir}/data"),
        format!("--web.listen-address={address}"),
    ]);
    assert!(
        Command::new("prometheus").arg("--version").output().is_ok_and(|o| o.status.success()),
        "the Prometheus server is needed: apt-get install prometheus"
    );
    spawn(command, "prometheus")
}

/// Runs an instant query: the result vector, or `None` if Prometheus refused the query.
fn query(prometheus: SocketAddr, promql: &str) -> Option<Vec<Value>> {
    let mut url = format!("http://{prometheus}/api/v1/query?query=");
    for byte in promql.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => url.push(byte as char),
            other => url.push_str(&format!("%{other:02X}")),
        }
    }
    let (status, body) = http_get(&url)?;
    let answer: Value = serde_json::from_str(&body).ok()?;
    (status == 200 && answer["status"] == "success").then(|| answer["data"]["result"].as_array().cloned())?
}

/// The single value of an instant query that sums to one number.
fn number(prometheus: SocketAddr, promql: &str) -> Option<f64> {
    let result = query(prometheus, promql)?;
    result.first()?["value"][1].as_str()?.parse().ok()
}

#[tokio::test]
async fn prometheus_counts_the_jobs_sees_one_leader_and_evaluates_the_alerts_and_the_dashboard() {
    let queue = TestQueue::declare("prometheus").await;
    let (worker_at, schedulers_at, prometheus_at) = (free_address(), [free_address(), free_address()], free_address());
    let _worker = start_worker(queue.name(), &["--metrics-addr", &worker_at.to_string()]);
    let group = unique_name("prometheus");
    let schedules = temp_file("prometheus-schedules");
    let pulse = format!(
        "[[schedule]]\nname = \"pulse\"\ncron = \"* * * * * *\"\njob = \"demo.noop\"\nqueue = \"{}\"\n",
        queue.name()
    );
    std::fs::write(&schedules, pulse).expect("written");
    // Declared before the replicas, so that they stop before their queues are deleted.
    let mut cleanup = Cleanup::default();
    cleanup.queue(lepus::internal::topology::scheduler_leader_queue(&group));
    cleanup.queue(lepus::internal::topology::schedule_state_queue(&group, "pulse"));
    let _replicas: Vec<Process> = schedulers_at
        .iter()
        .map(|address| {
            let mut command = Command::new(scheduler_binary());
            command.args(["run", "--schedules", &schedules, "--group", &group, "--metrics-addr", &address.to_string()]);
            spawn(command, "scheduler")
        })
        .collect();
    let _prometheus = prometheus(prometheus_at, worker_at, schedulers_at);
    queue.wait_for_consumers(1).await;

    let client = connect().await;
    for i in 0..20 {
        let sum = client.call(Request::new(Add { a: i, b: i }).queue(queue.name()), TIMEOUT).await.expect("a result");
        assert_eq!(sum, 2 * i);
    }
    // Prometheus keeps Lepus's `job` label as `exported_job`: `job` is its own, the scrape job's.
    let succeeded = format!(
        "sum(lepus_jobs_total{{outcome=\"succeeded\", queue=\"{}\", exported_job=\"demo.add\"}})",
        queue.name()
    );
    wait_until("Prometheus counts 20 demo.add jobs", TIMEOUT, || async {
        number(prometheus_at, &succeeded) == Some(20.0)
    })
    .await;
    wait_until("one scheduler replica leads", TIMEOUT, || async {
        number(prometheus_at, "sum(lepus_scheduler_leader)") == Some(1.0)
            && number(prometheus_at, "count(lepus_scheduler_leader)") == Some(2.0)
    })
    .await;
    assert_eq!(number(prometheus_at, "sum(lepus_broker_connected)"), Some(3.0), "all three connected");
    assert_eq!(number(prometheus_at, "sum(up)"), Some(3.0), "all three scraped");

    // Every alert rule evaluates without error, and none fires on this healthy system.
    let (_, rules) = http_get(&format!("http://{prometheus_at}/api/v1/rules")).expect("rules");
    let rules: Value = serde_json::from_str(&rules).expect("JSON");
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert!(loaded.len() >= 5, "the alert rules are loaded: {rules}");
    for rule in &loaded {
        assert_eq!(rule["health"], "ok", "rule {} evaluates: {rule}", rule["name"]);
    }
    // (A rule evaluated before the first scrapes may be pending a moment: `for` keeps it from firing.)
    let active = || {
        let (_, alerts) = http_get(&format!("http://{prometheus_at}/api/v1/alerts")).expect("alerts");
        let alerts: Value = serde_json::from_str(&alerts).expect("JSON");
        alerts["data"]["alerts"].as_array().cloned().unwrap_or_default()
    };
    wait_until("no alert is active on a healthy system", Duration::from_secs(10), || async { active().is_empty() })
        .await;

    // Every dashboard query parses; those on Lepus's metrics find series.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(deploy_file("grafana/lepus.json")).expect("dashboard"))
            .expect("JSON");
    let expressions: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().into_iter().flatten())
        .filter_map(|target| target["expr"].as_str())
        .map(|expr| expr.replace("$__rate_interval", "1m").replace("$queue", ".*"))
        .collect();
    assert!(expressions.len() >= 10, "{expressions:?}");
    tokio::time::sleep(Duration::from_secs(3)).await; // rates need two samples
    for expr in &expressions {
        let result =
            query(prometheus_at, expr).unwrap_or_else(|| panic!("Prometheus refuses the dashboard query {expr}"));
        if !expr.contains("rabbitmq_") {
            assert!(!result.is_empty(), "the dashboard query {expr} finds nothing");
        }
    }
    client.close().await.expect("closed");
}
