//! Rate limits across all workers, on the broker alone: before a rate-limited job starts, its
//! worker takes a token from the limit's bucket (`lepus.rate.<key>`), which one elected process
//! fills at the rate (see [`crate::rate_issuer`]); this process's [`Gate`] hands the tokens to
//! its waiting jobs in turn.
//!
//! A job's limit is its `x-lepus-rate-limit` header (a request's [`lepus::Request::rate_limit`],
//! or a Python client's header), else its job type's [`lepus::Job::rate_limit`]; it counts under
//! its `x-lepus-rate-key` header, else its task name. A process learns a key from the first job
//! that needs it (or, for a job type registered with a limit, at start-up) and from then on runs
//! the key's gate and competes for its issuing, at the rate it learnt first.
//!
//! While a job waits for its token it holds its delivery (one of the consumer's prefetch, so a
//! worker never holds more than its prefetch of them) but not a concurrency permit, so other
//! queues' jobs run meanwhile; it takes a permit once it has its token. A job that has no token
//! after [`TOKEN_WAIT`] (or when the worker stops) is handed back: published again to the tail of
//! its queue, confirmed, then acked (never nacked: that would count towards the delivery limit).
//! So no delivery is held anywhere near RabbitMQ's 30-minute consumer timeout.

use crate::canvas;
use crate::outcome::{Outcome, Reply};
use crate::rate_gate::Gate;
use crate::registry::Registered;
use lepus::dead_letter::Reason;
use lepus::internal::topology;
use lepus::protocol::{ExceptionInfo, ResultMessage, TaskMessage};
use lepus::{Broker, Rate, ReplyCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

/// How long a job waits for its token before it is handed back to its queue.
pub(crate) const TOKEN_WAIT: Duration = Duration::from_secs(10);

/// A key no job of this process asked for in this long is forgotten (its gate and issuer
/// stopped, its lock given up), unless a registered job type has it.
const IDLE: Duration = Duration::from_secs(10 * 60);

/// How often idle keys are looked for.
const SWEEP: Duration = Duration::from_secs(60);

type Known = Arc<Mutex<HashMap<String, Limit>>>;

/// The rate keys this process knows: their rate and gate.
pub(crate) struct RateLimits {
    broker: Broker,
    stop: CancellationToken,
    wait: Duration,
    limits: Known,
}

struct Limit {
    rate: Rate,
    gate: Gate,
    /// Whether a job asked for another rate under this key (logged once).
    warned: bool,
    /// When a job last asked for this key; `None` for a registered job type's (never idle).
    used: Option<Instant>,
    /// Stops this key's gate and issuer.
    stop: CancellationToken,
}

/// Why a job's limit could not be applied.
enum Refusal {
    /// Its headers are wrong, or its key's bucket has another capacity: it never will be.
    Bad(String),
    /// The broker could not be asked now: later it may.
    Unavailable(String),
}

impl RateLimits {
    /// The rate limits of a worker on `broker`; the gates and issuers of the limits of job types
    /// (`registered`: a task name and its rate) start at once.
    pub(crate) fn start<'a>(
        broker: Broker,
        stop: CancellationToken,
        registered: impl Iterator<Item = (&'a str, Rate)>,
    ) -> Self {
        let limits = Self { broker, stop, wait: TOKEN_WAIT, limits: Known::default() };
        for (task, rate) in registered {
            if topology::validate_rate_key(task).is_ok() {
                limits.insert(task, rate, None);
            }
        }
        tokio::spawn(sweep(Arc::clone(&limits.limits), limits.stop.clone()));
        limits
    }

    /// The gate of `key`, started with `rate` if the key is new (its bucket declared first).
    async fn gate(&self, key: &str, rate: Rate) -> Result<Gate, Refusal> {
        if let Some(gate) = self.known(key, rate) {
            return Ok(gate);
        }
        topology::validate_rate_key(key).map_err(|e| Refusal::Bad(e.to_string()))?;
        let channel = self.broker.channel().await.map_err(|e| Refusal::Unavailable(e.to_string()))?;
        let declared = topology::declare_rate_tokens(&channel, key, &rate).await;
        if channel.status().connected() {
            drop(channel.close(200, "rate bucket declared".into()).await);
        }
        match declared {
            Ok(()) => Ok(self.known(key, rate).unwrap_or_else(|| self.insert(key, rate, Some(Instant::now())))),
            Err(e) if e.reply_code() == Some(ReplyCode::PreconditionFailed) => Err(Refusal::Bad(format!(
                "rate key {key:?} already has a bucket of another capacity than {rate}'s ({} tokens): \
                 give each key one rate; {e}",
                rate.capacity()
            ))),
            Err(e) => Err(Refusal::Unavailable(e.to_string())),
        }
    }

    fn known(&self, key: &str, rate: Rate) -> Option<Gate> {
        let mut limits = self.limits.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let limit = limits.get_mut(key)?;
        if limit.used.is_some() {
            limit.used = Some(Instant::now());
        }
        if limit.rate != rate && !limit.warned {
            limit.warned = true;
            tracing::warn!(rate_key = key, first = %limit.rate, asked = %rate, "a job asks for another rate under a known rate key; the first one applies");
        }
        Some(limit.gate.clone())
    }

    /// The gate of `key`, started (with its issuer) unless another task started it first: the
    /// check and the insert are one step under the lock, so a process never runs two issuers
    /// of a key (on one connection both would hold the exclusive lock, and tokens come twice as
    /// fast).
    fn insert(&self, key: &str, rate: Rate, used: Option<Instant>) -> Gate {
        let mut limits = self.limits.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(limit) = limits.get(key) {
            return limit.gate.clone();
        }
        let stop = self.stop.child_token();
        let gate = Gate::start(self.broker.clone(), key.to_owned(), rate, stop.clone());
        crate::rate_issuer::start(self.broker.clone(), key.to_owned(), rate, stop.clone());
        let limit = Limit { rate, gate: gate.clone(), warned: false, used, stop };
        limits.insert(key.to_owned(), limit);
        drop(limits);
        tracing::info!(rate_key = key, %rate, "rate limit known");
        gate
    }

    /// Waits for `message`'s turn under its rate limit, if it has one; `None` when it may start
    /// now, else what becomes of it instead (handed back, or dead-lettered for a bad limit). The
    /// concurrency `permit` is given up while it waits and taken again once it has its token.
    pub(crate) async fn wait_turn(
        &self,
        message: &TaskMessage,
        job: &Registered,
        queue: &str,
        permit: &mut Option<OwnedSemaphorePermit>,
    ) -> Option<Outcome> {
        let requested = match lepus::internal::requested_rate(message) {
            Ok(requested) => requested,
            Err(error) => return Some(refused(message, queue, error)),
        };
        let rate = requested.or(job.rate_limit)?;
        let key = lepus::internal::requested_rate_key(message).unwrap_or_else(|| message.task.clone());
        let gate = match self.gate(&key, rate).await {
            Ok(gate) => gate,
            Err(Refusal::Bad(error)) => return Some(refused(message, queue, error)),
            Err(Refusal::Unavailable(error)) => {
                tracing::warn!(rate_key = key, error, "cannot reach the rate limit's bucket; job handed back");
                return Some(handed_back(message));
            }
        };
        let semaphore = permit.take().map(|permit| Arc::clone(permit.semaphore()));
        let turn = gate.turn();
        let waited = tokio::select! {
            biased;
            () = self.stop.cancelled() => false,
            got = tokio::time::timeout(self.wait, turn) => matches!(got, Ok(Ok(()))),
        };
        if !waited {
            tracing::debug!(rate_key = key, "no token in time; job handed back to its queue");
            return Some(handed_back(message));
        }
        if let Some(semaphore) = semaphore {
            match semaphore.acquire_owned().await {
                Ok(taken) => *permit = Some(taken),
                Err(_) => return Some(handed_back(message)),
            }
        }
        None
    }
}

/// Forgets, every [`SWEEP`], the keys no job asked for in [`IDLE`]: their gates and issuers
/// stop (an issuer gives its lock up), so a process does not keep a consumer and a lock
/// attempt a second for every key it ever met. A job of a forgotten key brings it back.
async fn sweep(limits: Known, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(SWEEP) => {}
        }
        let mut limits = limits.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        limits.retain(|key, limit| {
            let idle = limit.used.is_some_and(|used| used.elapsed() >= IDLE);
            if idle {
                tracing::info!(rate_key = key, "rate key idle; forgotten");
                limit.stop.cancel();
            }
            !idle
        });
    }
}

/// The job goes back to the tail of its queue, as it came (counted as deferred).
fn handed_back(message: &TaskMessage) -> Outcome {
    Outcome::deferred(message.retries, Duration::ZERO)
}

/// A job whose limit cannot be applied: dead-lettered with the reason, a `ValueError` for its
/// caller.
fn refused(message: &TaskMessage, queue: &str, error: String) -> Outcome {
    tracing::warn!(error, "job's rate limit refused");
    let exception = ExceptionInfo::python("builtins", "ValueError", error.clone());
    let result = ResultMessage::failure(&message.id, &exception, None);
    let then = canvas::after_failure(message, queue, &result);
    Outcome::DeadLetter { reason: Reason::BadRateLimit, error, attempts: 0, reply: Reply::to(message, result), then }
}
