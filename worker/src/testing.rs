//! A test harness for job authors: run jobs through their handlers without RabbitMQ.
//!
//! [`TestWorker`] registers handlers and state as a [`crate::Worker`] does, and runs jobs through
//! the worker's own execute step: arguments travel as Celery `args`/`kwargs`, time limits and
//! retry policies apply, failures become the exceptions Celery clients would see. With
//! [`lepus::Client::recording`], a handler's client records what it enqueues, and
//! [`TestWorker::drain`] runs those jobs in turn. Waits (delays, retry backoffs) are on tokio's
//! clock: in a `#[tokio::test(start_paused = true)]` they pass at once. (Start the clock paused
//! with tokio's `test-util` feature in your dev-dependencies.)
//!
//! ```
//! use lepus::{Job, Request, RetryPolicy};
//! use lepus_worker::testing::{Run, TestWorker};
//! use lepus_worker::JobError;
//! use std::time::Duration;
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Add { a: i64, b: i64 }
//! # impl Job for Add { const NAME: &'static str = "demo.add"; type Output = i64; }
//!
//! async fn add(job: Add) -> Result<i64, JobError> {
//!     job.a.checked_add(job.b).ok_or_else(|| JobError::permanent("overflow").exception("builtins.OverflowError"))
//! }
//!
//! # tokio_test_runtime(async {
//! let worker = TestWorker::new().register(add);
//! assert!(matches!(worker.run(Add { a: 2, b: 3 }).await, Run::Succeeded(5)));
//! let Run::Failed(exception) = worker.run(Add { a: i64::MAX, b: 1 }).await else { panic!() };
//! assert_eq!(exception.exc_type, "OverflowError");
//! # });
//! # fn tokio_test_runtime(f: impl std::future::Future<Output = ()>) {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

use crate::execute;
use crate::handler::Handler;
use crate::outcome::{Ended, Outcome, Reply};
use crate::registry::Registry;
use crate::states::States;
use chrono::Utc;
use lepus::internal::{Record, recording};
use lepus::protocol::{ExceptionInfo, Status, TaskMessage};
use lepus::{Client, Job, Request};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The reply queue the harness puts on the messages it runs, so that every run yields a result.
const TEST_REPLY_TO: &str = "lepus.testing";

/// The most runs one [`TestWorker::drain`] makes: a flow that keeps enqueueing ends there.
const DRAIN_LIMIT: usize = 10_000;

/// Handlers and state, run in this process without a broker. See the [module docs](self).
pub struct TestWorker {
    registry: Registry,
    states: Arc<States>,
    stop: CancellationToken,
}

impl std::fmt::Debug for TestWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestWorker").field("jobs", &self.registry.names()).finish_non_exhaustive()
    }
}

impl Default for TestWorker {
    fn default() -> Self {
        Self::new()
    }
}

/// How one run of a job ended.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Run<O> {
    /// The handler returned this output.
    Succeeded(O),
    /// The handler failed; the job runs again after `after` (its retry policy, or the
    /// handler's `JobError::retry_after`).
    WillRetry {
        /// How long until the next attempt.
        after: Duration,
        /// What failed, as Celery clients would see it.
        exception: ExceptionInfo,
    },
    /// The job failed for good (no attempts left, or the handler said so): the exception its
    /// caller gets.
    Failed(ExceptionInfo),
    /// The job was not run: no handler of that name, arguments that do not fit its input
    /// (`TypeError`), or it expired. A worker would dead-letter it (or answer `REVOKED`).
    Refused(ExceptionInfo),
}

impl<O> Run<O> {
    /// The output, if the handler succeeded.
    pub fn output(self) -> Option<O> {
        match self {
            Run::Succeeded(output) => Some(output),
            _ => None,
        }
    }
}

/// One run made by [`TestWorker::drain`].
#[derive(Debug, Clone, PartialEq)]
pub struct Ran {
    /// The queue the job was sent to.
    pub queue: String,
    /// The job's name.
    pub task: String,
    /// Its id.
    pub id: lepus::JobId,
    /// When it ran, on tokio's clock, from the start of the drain.
    pub at: Duration,
    /// How it ended; the output as JSON.
    pub run: Run<Value>,
}

impl TestWorker {
    /// A harness with no handlers yet.
    #[must_use]
    pub fn new() -> Self {
        Self { registry: Registry::default(), states: Arc::default(), stop: CancellationToken::new() }
    }

    /// Adds application state, as [`crate::Worker::state`] does.
    #[must_use]
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        // Only the builder holds the states until the first run: this always finds them.
        if let Some(states) = Arc::get_mut(&mut self.states) {
            states.insert(value);
        }
        self
    }

    /// Registers a handler, as [`crate::Worker::register`] does.
    #[must_use]
    pub fn register<J: Job, Args: 'static>(mut self, handler: impl Handler<J, Args>) -> Self {
        self.registry.insert(handler);
        self
    }

    /// Runs a job (or a request, with its options) once, as its first attempt.
    pub async fn run<O: DeserializeOwned>(&self, request: impl Into<Request<O>>) -> Run<O> {
        match request.into().into_message(Utc::now()) {
            Ok((queue, message)) => typed(self.attempt(message, &queue).await.0),
            Err(e) => Run::Refused(ExceptionInfo::python("builtins", "TypeError", e.to_string())),
        }
    }

    /// Runs a job and its retries until it succeeds or fails for good, waiting each backoff on
    /// tokio's clock. Returns every attempt, the last one last.
    pub async fn run_until_done<O: DeserializeOwned>(&self, request: impl Into<Request<O>>) -> Vec<Run<O>> {
        let (queue, mut message) = match request.into().into_message(Utc::now()) {
            Ok(prepared) => prepared,
            Err(e) => return vec![Run::Refused(ExceptionInfo::python("builtins", "TypeError", e.to_string()))],
        };
        let mut runs = Vec::new();
        loop {
            let (run, next_retries) = self.attempt(message.clone(), &queue).await;
            let wait = match &run {
                Run::WillRetry { after, .. } => Some(*after),
                _ => None,
            };
            runs.push(typed(run));
            let Some(wait) = wait else { return runs };
            tokio::time::sleep(wait).await;
            message.retries = next_retries;
        }
    }

    /// Runs a task message as a worker consuming the default queue would: one from
    /// `Schedule::firing`, from a Python client, or recorded by a client. Its `eta`, if any,
    /// counts as reached.
    pub async fn run_message(&self, message: TaskMessage) -> Run<Value> {
        self.attempt(message, lepus::DEFAULT_QUEUE).await.0
    }

    /// Runs every job a recording `client` has sent, the earliest due first, waiting until each
    /// is due on tokio's clock; then the jobs those jobs sent, and so on until none is left. A
    /// retry goes back in line at its time; what follows a job by its Celery canvas (links, the
    /// next chain step, error links) is sent too; a batch's callback is sent (and run) once its
    /// last job has finished; the handles the client's `submit` gave out get their results.
    /// Returns the runs in order (at most 10,000).
    pub async fn drain(&self, client: &Client) -> Vec<Ran> {
        let started = Instant::now();
        let mut line: Vec<(Instant, lepus::Sent)> = Vec::new();
        let mut ran = Vec::new();
        while ran.len() < DRAIN_LIMIT {
            for sent in client.take_sent() {
                let wait = sent.eta().and_then(|eta| (eta - Utc::now()).to_std().ok()).unwrap_or_default();
                line.push((Instant::now() + wait, sent));
            }
            let Some(next) = line.iter().enumerate().min_by_key(|(_, (due, _))| *due).map(|(index, _)| index) else {
                break;
            };
            let (due, sent) = line.remove(next);
            tokio::time::sleep_until(due).await;
            let lepus::Sent { queue, mut message } = sent;
            let (id, task, correlation_id) =
                (message.id.clone(), message.task.clone(), message.correlation_id.clone().unwrap_or_default());
            let wants_result = message.reply_to.is_some();
            let outcome = self.outcome(message.clone(), &queue).await;
            if let Outcome::Done { then, .. } | Outcome::DeadLetter { then, .. } = &outcome {
                for (to, follow_up) in &then.messages {
                    recording::send(client, to, follow_up.clone());
                }
                for reply in &then.replies {
                    recording::answer(client, &reply.correlation_id, reply.result.clone());
                }
            }
            if let Some(result) = final_result(&outcome) {
                if wants_result {
                    recording::answer(client, &correlation_id, result.clone());
                }
                if let Some(record) = Record::of(&message, result.status == Status::Success) {
                    recording::finish_batch_job(client, &record);
                }
            }
            let (run, retries) = run_of(outcome);
            if let Run::WillRetry { after, .. } = &run {
                message.retries = retries;
                message.eta = None;
                line.push((Instant::now() + *after, lepus::Sent { queue: queue.clone(), message }));
            }
            ran.push(Ran { queue, task, id, at: started.elapsed(), run });
        }
        ran
    }

    /// One attempt of `message` from `queue`: how it ended, and the `retries` of a next attempt.
    async fn attempt(&self, message: TaskMessage, queue: &str) -> (Run<Value>, u32) {
        run_of(self.outcome(message, queue).await)
    }

    async fn outcome(&self, mut message: TaskMessage, queue: &str) -> Outcome {
        message.eta = None;
        message.reply_to.get_or_insert_with(|| TEST_REPLY_TO.to_owned());
        message.ignore_result = false;
        execute::run(message, queue, &self.registry, &self.states, &self.stop).await.outcome
    }
}

/// The final result an outcome answers its caller with, if it is final.
fn final_result(outcome: &Outcome) -> Option<&lepus::protocol::ResultMessage> {
    match outcome {
        Outcome::Done { reply: Some(Reply { result, .. }), .. }
        | Outcome::DeadLetter { reply: Some(Reply { result, .. }), .. } => Some(result),
        _ => None,
    }
}

/// How an outcome reads as a run, and the `retries` of the next attempt.
fn run_of(outcome: Outcome) -> (Run<Value>, u32) {
    let exception = |result: &lepus::protocol::ResultMessage| {
        result.exception().unwrap_or_else(|| ExceptionInfo::new("Unknown", result.result.to_string()))
    };
    match outcome {
        Outcome::Done { reply: Some(Reply { result, .. }), ended: Ended::Succeeded, .. } => {
            (Run::Succeeded(result.result), 0)
        }
        Outcome::Done { reply, .. } => {
            let exception = reply.map_or_else(|| ExceptionInfo::new("Revoked", "not run"), |r| exception(&r.result));
            (Run::Refused(exception), 0)
        }
        Outcome::DeadLetter { reason, error, reply, .. } => {
            let exception = reply.map_or_else(|| ExceptionInfo::new(reason.as_str(), error), |r| exception(&r.result));
            match reason {
                lepus::dead_letter::Reason::Failed => (Run::Failed(exception), 0),
                _ => (Run::Refused(exception), 0),
            }
        }
        Outcome::Reschedule { retries, delay, failure: Some(exception), .. } => {
            (Run::WillRetry { after: delay, exception }, retries)
        }
        Outcome::Reschedule { retries, delay, failure: None, .. } => {
            let exception = ExceptionInfo::new("NotDue", format!("due in {delay:?}"));
            (Run::WillRetry { after: delay, exception }, retries)
        }
    }
}

/// A run with its output decoded as `O`.
fn typed<O: DeserializeOwned>(run: Run<Value>) -> Run<O> {
    match run {
        Run::Succeeded(value) => match serde_json::from_value(value) {
            Ok(output) => Run::Succeeded(output),
            Err(e) => {
                Run::Failed(ExceptionInfo::python("builtins", "TypeError", format!("cannot decode the output: {e}")))
            }
        },
        Run::WillRetry { after, exception } => Run::WillRetry { after, exception },
        Run::Failed(exception) => Run::Failed(exception),
        Run::Refused(exception) => Run::Refused(exception),
    }
}
