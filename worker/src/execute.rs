//! Deciding what becomes of a decoded job: refuse it (unknown, or past the delivery limit), let it
//! expire, send it back to wait for its `eta`, or run it (with its time limit, catching panics)
//! and, if it fails, retry it or give up.

use crate::canvas;
use crate::context::JobContext;
use crate::event_context::EventContext;
use crate::job_error::JobError;
use crate::job_error::Next;
use crate::outcome::{Ended, FollowUps, Outcome, Reply};
use crate::registry::{CallError, Registered, Registry};
use crate::revoked::Revoked;
use crate::states::States;
use chrono::{TimeDelta, Utc};
use futures_lite::FutureExt;
use lepus::dead_letter::Reason;
use lepus::protocol::{ExceptionInfo, ResultMessage, TaskMessage};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How a handler call ended.
enum Called {
    Returned(serde_json::Value),
    /// A `revoke` with `terminate` stopped it.
    Terminated,
    /// The arguments do not fit the input type: the handler never ran.
    BadInput(String),
    /// The run failed: the error as Celery would name it, and what the handler asked for.
    Failed {
        exception: ExceptionInfo,
        next: Next,
    },
}

/// Refuses a message the broker has already handed out `limit` times (its `x-delivery-count`,
/// `handed_out`), each time to a worker that died or lost its connection before settling it: a
/// job that crashes its process, say. Run again, it would end the same way, and then the broker
/// would dead-letter it without a word to anyone. Dead-lettered here instead, it fails for its
/// caller (Celery's `WorkerLostError`) and for its batch. So a message runs at most `limit` times.
pub(crate) fn past_delivery_limit(message: &TaskMessage, queue: &str, handed_out: u64, limit: u32) -> Option<Outcome> {
    if handed_out < u64::from(limit) {
        return None;
    }
    let error = format!(
        "handed out {handed_out} times (the queue's delivery limit) without finishing: each time, \
         the worker running it died or lost its connection; not run again"
    );
    tracing::error!(handed_out, limit, "job dead-lettered at the delivery limit");
    let exception = ExceptionInfo::python("celery.exceptions", "WorkerLostError", error.clone());
    let (reply, then) = ended(message, queue, ResultMessage::failure(&message.id, &exception, None));
    let attempts = u32::try_from(handed_out).unwrap_or(u32::MAX);
    Some(Outcome::DeadLetter { reason: Reason::DeliveryLimit, error, attempts, reply, then })
}

/// What became of one job message, how long its handler ran (if it ran), and its output when
/// no caller took it (for the `task-succeeded` event).
#[derive(Debug)]
pub(crate) struct Executed {
    pub(crate) outcome: Outcome,
    pub(crate) ran_for: Option<Duration>,
    pub(crate) output: Option<serde_json::Value>,
}

impl From<Outcome> for Executed {
    /// An outcome decided without running the handler.
    fn from(outcome: Outcome) -> Self {
        Self { outcome, ran_for: None, output: None }
    }
}

/// Decides the outcome of one job message (with no revoked ids, nothing to terminate it): the
/// test harness's way in. A worker calls [`admit`] and [`run_admitted`] itself.
pub(crate) async fn run(
    message: TaskMessage,
    queue: &str,
    registry: &Registry,
    states: &Arc<States>,
    stop: &CancellationToken,
) -> Executed {
    match admit(&message, queue, registry, &Revoked::default()) {
        Admission::NotRun(outcome) => (*outcome).into(),
        Admission::Run(job) => run_admitted(message, job, queue, states, stop, &CancellationToken::new(), None).await,
    }
}

/// Whether a message is to run now.
pub(crate) enum Admission<'a> {
    /// Run it: this is its job.
    Run(&'a Registered),
    /// This becomes of it without running.
    NotRun(Box<Outcome>),
}

/// Whether `message` is to run now: its job, or else what becomes of it without running. It is
/// refused (unknown job), not run (revoked, expired), or sent back to wait for its `eta`.
pub(crate) fn admit<'a>(
    message: &TaskMessage,
    queue: &str,
    registry: &'a Registry,
    revoked: &Revoked,
) -> Admission<'a> {
    let Some(job) = registry.get(&message.task) else {
        let error =
            format!("no job named {:?} is registered on this worker; it runs {:?}", message.task, registry.names());
        // Celery's NotRegistered takes the task name as its message.
        let exception = ExceptionInfo::python("celery.exceptions", "NotRegistered", message.task.clone());
        let (reply, then) = ended(message, queue, ResultMessage::failure(&message.id, &exception, None));
        return Admission::NotRun(Box::new(Outcome::DeadLetter {
            reason: Reason::UnknownJob,
            error,
            attempts: 0,
            reply,
            then,
        }));
    };
    if revoked.contains(message.id.as_str(), lepus::control::unix_now()) {
        tracing::info!("job revoked; not run");
        return Admission::NotRun(Box::new(revoked_outcome(message, queue, "revoked")));
    }
    let now = Utc::now();
    if let Some(expires) = message.expires.filter(|expires| *expires <= now) {
        tracing::info!(%expires, "job expired before it could start; not run");
        let exception = ExceptionInfo::python("celery.exceptions", "TaskRevokedError", format!("expired at {expires}"));
        let (reply, then) = ended(message, queue, ResultMessage::revoked(&message.id, &exception));
        return Admission::NotRun(Box::new(Outcome::Done { reply, ended: Ended::Expired, then }));
    }
    if let Some(eta) = message.eta.filter(|eta| *eta > now) {
        let delay = (eta - now).to_std().unwrap_or_default();
        tracing::debug!(%eta, "job arrived before its eta; back to the broker's delay cascade");
        return Admission::NotRun(Box::new(Outcome::Reschedule {
            retries: message.retries,
            eta,
            delay,
            ended: Ended::Deferred,
            failure: None,
        }));
    }
    Admission::Run(job)
}

/// A job that is not run, or no longer: `REVOKED` for its caller (Celery's `TaskRevokedError`).
fn revoked_outcome(message: &TaskMessage, queue: &str, why: &str) -> Outcome {
    let exception = ExceptionInfo::python("celery.exceptions", "TaskRevokedError", why);
    let (reply, then) = ended(message, queue, ResultMessage::revoked(&message.id, &exception));
    Outcome::Done { reply, ended: Ended::Revoked, then }
}

/// Runs an admitted job under its time limit, catching panics, and decides what follows: a
/// result, a retry, a final failure, or, if `terminate` is cancelled while it runs (a `revoke`
/// with `terminate`), `REVOKED` (the handler's future is dropped at its next await).
pub(crate) async fn run_admitted(
    mut message: TaskMessage,
    job: &Registered,
    queue: &str,
    states: &Arc<States>,
    stop: &CancellationToken,
    terminate: &CancellationToken,
    event: Option<Arc<EventContext>>,
) -> Executed {
    let now = Utc::now();
    let attempt = message.retries.saturating_add(1);
    let started = Instant::now();
    let called = tokio::select! {
        called = call(&mut message, job, states, stop, event) => called,
        () = terminate.cancelled() => Called::Terminated,
    };
    let elapsed = started.elapsed();
    let ran = |outcome| Executed { outcome, ran_for: Some(elapsed), output: None };
    let (exception, next) = match called {
        Called::Returned(value) => {
            tracing::debug!(?elapsed, attempt, "job succeeded");
            let then = canvas::after_success(&message, queue, &value);
            if message.reply_destination().is_none() {
                let outcome = Outcome::Done { reply: None, ended: Ended::Succeeded, then };
                return Executed { outcome, ran_for: Some(elapsed), output: Some(value) };
            }
            let reply = Reply::to(&message, ResultMessage::success(&message.id, value));
            return ran(Outcome::Done { reply, ended: Ended::Succeeded, then });
        }
        Called::Terminated => {
            tracing::warn!(?elapsed, "job terminated by a revoke");
            return ran(revoked_outcome(&message, queue, "terminated"));
        }
        Called::BadInput(error) => {
            let error = format!("arguments do not fit {}: {error}", message.task);
            let exception = ExceptionInfo::python("builtins", "TypeError", error.clone());
            let (reply, then) = ended(&message, queue, ResultMessage::failure(&message.id, &exception, None));
            return Outcome::DeadLetter { reason: Reason::BadInput, error, attempts: 0, reply, then }.into();
        }
        Called::Failed { exception, next } => (exception, next),
    };

    let error = exception.message();
    let policy = message.retry.unwrap_or(job.retry);
    let retry_in = match next {
        Next::Fail => None,
        _ if !policy.allows_another(attempt) => None,
        Next::Retry => Some(policy.delay_after(attempt)),
        Next::RetryAfter(delay) => Some(delay),
    };
    match retry_in {
        Some(delay) => {
            tracing::warn!(?elapsed, attempt, max_attempts = policy.max_attempts, retry_in = ?delay, %error, "job failed; will retry");
            let eta = now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX);
            ran(Outcome::Reschedule { retries: attempt, eta, delay, ended: Ended::Retried, failure: Some(exception) })
        }
        None => {
            tracing::warn!(?elapsed, attempt, max_attempts = policy.max_attempts, %error, "job failed");
            let (reply, then) = ended(&message, queue, ResultMessage::failure(&message.id, &exception, None));
            ran(Outcome::DeadLetter { reason: Reason::Failed, error, attempts: attempt, reply, then })
        }
    }
}

/// A job that ends without output: its result (`FAILURE` or `REVOKED`) for its caller, and what
/// follows by its canvas.
pub(crate) fn ended(message: &TaskMessage, queue: &str, result: ResultMessage) -> (Option<Reply>, FollowUps) {
    let then = canvas::after_failure(message, queue, &result);
    (Reply::to(message, result), then)
}

/// Calls the handler under its time limit, catching panics.
async fn call(
    message: &mut TaskMessage,
    job: &Registered,
    states: &Arc<States>,
    stop: &CancellationToken,
    event: Option<Arc<EventContext>>,
) -> Called {
    let context =
        JobContext::new(message.id.clone(), Arc::clone(&job.name), message.retries, stop.clone(), Arc::clone(states))
            .with_event(event);
    let arguments = std::mem::take(&mut message.arguments);
    let limit = time_limit(message, job);
    let running = AssertUnwindSafe(async {
        let handler = job.handler.call(arguments, &context);
        match limit {
            Some(limit) => tokio::time::timeout(limit, handler).await.map_err(|_| limit),
            None => Ok(handler.await),
        }
    });
    match running.catch_unwind().await {
        Ok(Ok(Ok(value))) => Called::Returned(value),
        Ok(Ok(Err(CallError::BadInput(error)))) => Called::BadInput(error),
        Ok(Ok(Err(CallError::Failed(error)))) => Called::Failed { exception: exception_of(&error), next: error.next() },
        Ok(Err(limit)) => {
            let text = format!("the job ran longer than its time limit of {limit:?} and was cancelled");
            let exception = ExceptionInfo::python("celery.exceptions", "TimeLimitExceeded", text);
            Called::Failed { exception, next: Next::Retry }
        }
        Err(panic) => {
            let text = panic_message(panic.as_ref());
            tracing::error!(panic = %text, "job panicked");
            let exception = ExceptionInfo::new("JobPanicked", format!("the job panicked: {text}"));
            Called::Failed { exception, next: Next::Retry }
        }
    }
}

/// A handler's failure as Celery serializes exceptions: its class (`JobError` unless the handler
/// named one) and its message with its causes.
fn exception_of(error: &JobError) -> ExceptionInfo {
    let message = error.message_with_causes();
    match error.python_class() {
        (Some(module), class) => ExceptionInfo::python(module, class, message),
        (None, class) => ExceptionInfo::new(class, message),
    }
}

/// The message's hard (else soft) Celery time limit, else the job type's.
fn time_limit(message: &TaskMessage, job: &Registered) -> Option<Duration> {
    let from_message =
        message.time_limit.hard.or(message.time_limit.soft).and_then(|s| Duration::try_from_secs_f64(s).ok());
    from_message.or(job.time_limit)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Run, TestWorker};
    use lepus::protocol::Arguments;
    use lepus::{Job, Request, RetryPolicy};
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    #[derive(Serialize, Deserialize)]
    struct Divide {
        a: i64,
        b: i64,
    }

    impl Job for Divide {
        const NAME: &'static str = "test.divide";
        type Output = i64;

        fn retry_policy() -> RetryPolicy {
            RetryPolicy::attempts(3).backoff(Duration::from_secs(2), 3.0, Duration::from_secs(60)).jitter(false)
        }
    }

    async fn divide(job: Divide) -> Result<i64, JobError> {
        match job.b {
            0 => Err(JobError::permanent("division by zero").exception("builtins.ZeroDivisionError")),
            -1 => Err(JobError::retry("the divisor is busy")),
            -2 => panic!("the divisor exploded"),
            -3 => Err(JobError::retry_after(Duration::from_secs(42), "come back later")),
            _ => Ok(job.a / job.b),
        }
    }

    #[derive(Serialize, Deserialize)]
    struct Nap {
        seconds: u64,
    }

    impl Job for Nap {
        const NAME: &'static str = "test.nap";
        type Output = ();

        fn time_limit() -> Option<Duration> {
            Some(Duration::from_secs(5))
        }
    }

    async fn nap(job: Nap) -> Result<(), JobError> {
        tokio::time::sleep(Duration::from_secs(job.seconds)).await;
        Ok(())
    }

    fn worker() -> TestWorker {
        TestWorker::new().register(divide).register(nap)
    }

    #[tokio::test]
    async fn a_job_that_returns_succeeds_with_its_output() {
        assert_eq!(worker().run(Divide { a: 7, b: 2 }).await, Run::Succeeded(3));
    }

    #[tokio::test]
    async fn unknown_jobs_bad_arguments_and_expired_jobs_are_refused_as_celery_would() {
        let unknown = worker().run(Request::task("no.such.job", Arguments::default())).await;
        let Run::Refused(exception) = unknown else { panic!("{unknown:?}") };
        assert_eq!(
            (exception.exc_module.as_deref(), exception.exc_type.as_str()),
            (Some("celery.exceptions"), "NotRegistered")
        );

        let wrong = Arguments { args: vec![json!("seven"), json!(2)], kwargs: Default::default() };
        let Run::Refused(exception) = worker().run(Request::task("test.divide", wrong)).await else { panic!() };
        assert_eq!(exception.exc_type, "TypeError");
        assert!(exception.message().contains("invalid type"), "{}", exception.message());

        let expired = Request::new(Divide { a: 1, b: 1 }).expires_at(Utc::now() - TimeDelta::seconds(1));
        let Run::Refused(exception) = worker().run(expired).await else { panic!() };
        assert_eq!(exception.exc_type, "TaskRevokedError");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_retried_by_the_jobs_policy_then_fails_for_good() {
        let runs = worker().run_until_done(Divide { a: 1, b: -1 }).await;
        let waits: Vec<Duration> = runs
            .iter()
            .filter_map(|run| match run {
                Run::WillRetry { after, exception } if exception.exc_type == "JobError" => Some(*after),
                _ => None,
            })
            .collect();
        assert_eq!(waits, [Duration::from_secs(2), Duration::from_secs(6)], "{runs:?}");
        let Some(Run::Failed(last)) = runs.last() else { panic!("{runs:?}") };
        assert_eq!(last.message(), "the divisor is busy");
    }

    #[tokio::test(start_paused = true)]
    async fn the_handler_decides_fail_now_or_retry_after() {
        let runs = worker().run_until_done(Divide { a: 1, b: 0 }).await;
        let [Run::Failed(exception)] = runs.as_slice() else { panic!("one attempt only: {runs:?}") };
        assert_eq!(
            (exception.exc_module.as_deref(), exception.exc_type.as_str()),
            (Some("builtins"), "ZeroDivisionError")
        );

        let Run::WillRetry { after, .. } = worker().run(Divide { a: 1, b: -3 }).await else { panic!() };
        assert_eq!(after, Duration::from_secs(42));
        let no_retries = Request::new(Divide { a: 1, b: -3 }).retry(RetryPolicy::attempts(1));
        assert!(matches!(worker().run(no_retries).await, Run::Failed(_)), "the request's policy overrides the job's");
    }

    #[tokio::test]
    async fn a_panic_fails_the_run_and_the_worker_carries_on() {
        let Run::WillRetry { exception, .. } = worker().run(Divide { a: 1, b: -2 }).await else { panic!() };
        assert_eq!(exception.exc_type, "JobPanicked");
        assert!(exception.message().contains("the divisor exploded"));
        assert_eq!(worker().run(Divide { a: 4, b: 2 }).await, Run::Succeeded(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_over_its_time_limit_is_cancelled() {
        let started = tokio::time::Instant::now();
        let Run::Failed(exception) = worker().run(Nap { seconds: 60 }).await else { panic!() };
        assert_eq!(exception.exc_type, "TimeLimitExceeded");
        assert_eq!(started.elapsed(), Duration::from_secs(5), "cancelled at the job type's limit");
        let longer = Request::new(Nap { seconds: 60 }).time_limit(Duration::from_secs(90));
        assert_eq!(worker().run(longer).await, Run::Succeeded(()), "the request's limit overrides");
    }

    #[tokio::test]
    async fn a_message_before_its_eta_goes_back_to_wait_and_runs_nothing() {
        let (_, mut message) = Request::new(Divide { a: 1, b: 0 }).into_message(Utc::now()).expect("valid");
        message.eta = Some(Utc::now() + TimeDelta::seconds(30));
        let registry = {
            let mut registry = Registry::default();
            registry.insert(divide);
            registry
        };
        let executed = run(message, "jobs", &registry, &Arc::default(), &CancellationToken::new()).await;
        assert_eq!(executed.ran_for, None, "the handler did not run");
        let Outcome::Reschedule { ended: Ended::Deferred, delay, failure: None, .. } = executed.outcome else {
            panic!("{executed:?}")
        };
        assert!(delay > Duration::from_secs(28) && delay <= Duration::from_secs(30), "{delay:?}");
    }

    #[test]
    fn a_message_at_the_delivery_limit_is_dead_lettered_unrun() {
        let (_, mut message) = Request::new(Divide { a: 1, b: 1 }).into_message(Utc::now()).expect("valid");
        message.reply_to = Some("replies".into());
        assert!(past_delivery_limit(&message, "jobs", 4, 5).is_none());
        let Some(Outcome::DeadLetter { reason, attempts, reply: Some(reply), .. }) =
            past_delivery_limit(&message, "jobs", 5, 5)
        else {
            panic!("refused at the limit")
        };
        assert_eq!((reason, attempts), (Reason::DeliveryLimit, 5));
        assert_eq!(reply.result.exception().map(|e| e.exc_type), Some("WorkerLostError".to_owned()));
    }
}
