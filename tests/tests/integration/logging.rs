//! Logs: every line logged inside a job names the job (text and JSON formats), and the broker
//! password never appears, whether the connection works or is refused.

use lepus::{Error, Request};
use lepus_demo::jobs::Fail;
use lepus_tests::{Raise, TestQueue, connect, rabbitmqctl, unique_name};
use serde_json::Value;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a failing job on a worker with the given log format; returns the job id and the log.
async fn failing_job_log<O: serde::de::DeserializeOwned>(format: &str, job: impl Into<Request<O>>) -> (String, String) {
    let queue = TestQueue::declare("logs").await;
    let worker = lepus_tests::start_worker(queue.name(), &["--log-format", format]);
    queue.wait_for_consumers(1).await;
    let client = connect().await;
    let pending = client.submit(job.into().queue(queue.name())).await;
    let pending = pending.expect("submitted");
    let id = pending.id().to_string();
    assert!(matches!(pending.output(TIMEOUT).await, Err(Error::JobFailed { .. })));
    client.close().await.expect("closed");
    (id, worker.log())
}

#[tokio::test]
async fn json_log_lines_inside_a_job_carry_its_id_and_name() {
    let (id, log) = failing_job_log("json", Fail { message: "disk on fire".into() }).await;
    let line = log.lines().find(|l| l.contains("job failed")).unwrap_or_else(|| panic!("no job failed line:\n{log}"));
    let line: Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(line["span"]["job.id"], id.as_str(), "{line}");
    assert_eq!(line["span"]["job.name"], "demo.fail", "{line}");
    assert_eq!(line["fields"]["error"], "disk on fire", "{line}");
}

#[tokio::test]
async fn text_log_lines_inside_a_job_carry_its_id_and_name() {
    let (id, log) = failing_job_log("text", Fail { message: "disk on fire".into() }).await;
    let line = log.lines().find(|l| l.contains("job failed")).unwrap_or_else(|| panic!("no job failed line:\n{log}"));
    assert!(line.contains(&format!("job.id={id}")) && line.contains("job.name=demo.fail"), "{line}");
}

#[tokio::test]
async fn a_failure_is_logged_with_its_chain_of_causes() {
    let job = Raise { message: "cannot save the report".into(), cause: Some("disk full".into()), ..Raise::default() };
    let (_, log) = failing_job_log("json", job).await;
    let line = log.lines().find(|l| l.contains("job failed")).unwrap_or_else(|| panic!("no job failed line:\n{log}"));
    let line: Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(line["fields"]["error"], "cannot save the report: disk full", "{line}");
}

/// A broker user that exists for one test.
struct BrokerUser(String);

impl BrokerUser {
    fn create(password: &str) -> Self {
        let name = unique_name("user");
        rabbitmqctl(&["add_user", &name, password]);
        let user = Self(name);
        rabbitmqctl(&["set_permissions", "-p", "/", &user.0, ".*", ".*", ".*"]);
        user
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        drop(std::process::Command::new("rabbitmqctl").args(["delete_user", &self.0]).output());
    }
}

#[tokio::test]
async fn the_broker_password_never_appears_in_logs() {
    let password = format!("pw-{}", uuid_fragment());
    let user = BrokerUser::create(&password);
    let queue = TestQueue::declare("secret").await;
    let url = format!("amqp://{}:{password}@127.0.0.1:5672/%2f", user.0);

    let mut worker = lepus_tests::start_worker_with_env(queue.name(), &[], &[("LEPUS_AMQP_URL", url.as_str())]);
    queue.wait_for_consumers(1).await;
    worker.terminate().expect("SIGTERM sent");
    assert!(worker.wait_exit(TIMEOUT).await.is_some_and(|s| s.success()), "{}", worker.log());
    let log = worker.log();
    assert!(log.contains(&format!("amqp://{}:***@127.0.0.1", user.0)), "{log}");

    let wrong = format!("amqp://{}:{password}-wrong@127.0.0.1:5672/%2f", user.0);
    let mut refused = lepus_tests::start_worker_with_env(queue.name(), &[], &[("LEPUS_AMQP_URL", wrong.as_str())]);
    let status = refused.wait_exit(TIMEOUT).await.expect("a refused worker exits");
    assert_eq!(status.code(), Some(1));
    let refusal = refused.log();
    assert!(refusal.contains("cannot connect to RabbitMQ") && refusal.contains(":***@"), "{refusal}");
    for output in [log, refusal] {
        assert!(!output.contains(&password), "the password leaked:\n{output}");
    }
}

fn uuid_fragment() -> String {
    unique_name("x").rsplit('-').next().unwrap_or_default().to_owned()
}
