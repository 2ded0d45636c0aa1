//! Why a message was dead-lettered, and the headers a dead letter carries.

use std::fmt;

/// Header: why the message was dead-lettered (a [`Reason`] in kebab case).
pub const REASON_HEADER: &str = "x-lepus-reason";
/// Header: the error in words.
pub const ERROR_HEADER: &str = "x-lepus-error";
/// Header: the queue the message came from (for an `unroutable` one: the queue it was for).
pub const QUEUE_HEADER: &str = "x-lepus-queue";
/// Header: the worker that dead-lettered it (`hostname:pid`).
pub const WORKER_HEADER: &str = "x-lepus-worker";
/// Header: when, ISO 8601.
pub const TIME_HEADER: &str = "x-lepus-dead-lettered-at";
/// Header: how many times the job ran (0 if it never ran).
pub const ATTEMPTS_HEADER: &str = "x-lepus-attempts";

/// Why a worker dead-lettered a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not a Celery protocol v2 JSON message.
    Undecodable,
    /// No handler is registered for the job name.
    UnknownJob,
    /// An event reached a service that has no handler for its name (a pattern matched it).
    UnknownEvent,
    /// The arguments do not decode into the job's input type.
    BadInput,
    /// The body is larger than the worker accepts.
    TooLarge,
    /// The job failed on its last allowed attempt (or said not to retry).
    Failed,
    /// The broker has handed the message out as many times as the queue's delivery limit allows,
    /// and each time the worker running it died or lost its connection.
    DeliveryLimit,
    /// A job's canvas follow-up (a link, a chain step) whose queue does not exist; its
    /// `x-lepus-queue` names that queue.
    Unroutable,
    /// The job's rate limit cannot be applied: a malformed `x-lepus-rate-limit` or
    /// `x-lepus-rate-key` header, or a key whose bucket has another capacity.
    BadRateLimit,
}

impl Reason {
    /// The header value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Undecodable => "undecodable",
            Reason::UnknownJob => "unknown-job",
            Reason::UnknownEvent => "unknown-event",
            Reason::BadInput => "bad-input",
            Reason::TooLarge => "too-large",
            Reason::Failed => "failed",
            Reason::DeliveryLimit => "delivery-limit",
            Reason::Unroutable => "unroutable",
            Reason::BadRateLimit => "bad-rate-limit",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
