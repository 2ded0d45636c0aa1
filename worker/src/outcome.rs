//! [`Outcome`]: what becomes of one delivery, decided by [`crate::execute`] and carried out by
//! [`crate::delivery`]; and [`Ended`], how it counts once settled.

use chrono::{DateTime, Utc};
use lepus::dead_letter::Reason;
use lepus::protocol::{ExceptionInfo, ResultMessage, TaskMessage};
use std::time::Duration;

/// What to do with a delivery.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Send what follows, answer the caller, if any, and ack.
    Done { reply: Option<Reply>, ended: Ended, then: FollowUps },
    /// Move the message to the dead-letter queue, send what follows, answer the caller, ack.
    DeadLetter { reason: Reason, error: String, attempts: u32, reply: Option<Reply>, then: FollowUps },
    /// Send the message back through the delay cascade with new `retries` and `eta`, ack. A retry
    /// carries the failure that caused it.
    Reschedule { retries: u32, eta: DateTime<Utc>, delay: Duration, ended: Ended, failure: Option<ExceptionInfo> },
}

impl Outcome {
    /// Back to its queue (with `delay`, through the delay cascade) without running and without
    /// a retry: a job that got no rate-limit token or concurrency slot in time, or lost its slot.
    pub(crate) fn deferred(retries: u32, delay: Duration) -> Self {
        let eta = Utc::now() + chrono::TimeDelta::from_std(delay).unwrap_or_default();
        Outcome::Reschedule { retries, eta, delay, ended: Ended::Deferred, failure: None }
    }
}

/// What follows a job by Celery's canvas (see [`crate::canvas`]): messages to send, and results
/// for the remaining steps of a chain that a failure ended.
#[derive(Debug, Default)]
pub(crate) struct FollowUps {
    /// Jobs to send: `(queue, message)`.
    pub(crate) messages: Vec<(String, TaskMessage)>,
    /// Results to send for jobs that will not run.
    pub(crate) replies: Vec<Reply>,
}

/// A result to send to the caller.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) to: String,
    pub(crate) correlation_id: String,
    pub(crate) result: ResultMessage,
}

impl Reply {
    /// The reply for `message`, unless its sender wants none.
    pub(crate) fn to(message: &TaskMessage, result: ResultMessage) -> Option<Self> {
        let (to, correlation_id) = message.reply_destination()?;
        Some(Self { to: to.to_owned(), correlation_id: correlation_id.to_owned(), result })
    }
}

/// How a delivery was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    Succeeded,
    Failed,
    DeadLettered,
    Retried,
    Deferred,
    Expired,
    /// Not run, or stopped, by a revoke.
    Revoked,
}

impl Ended {
    /// Whether the job is over (it will not run again).
    pub(crate) fn is_final(self) -> bool {
        !matches!(self, Ended::Retried | Ended::Deferred)
    }
}
