//! Dead letters: messages a worker refused, jobs that failed for good, and messages the broker
//! gave up on, kept in the work queue's dead-letter queue with the reason in their headers; and
//! [`DeadLetters`], to list them, send them back to their queue, or purge them.
//!
//! A worker dead-letters by publishing the original body and properties to `<queue>.dlq` with
//! these headers added, waiting for the confirm, and only then acking the original. The broker
//! dead-letters on its own when a message exceeds the queue's delivery limit (it adds `x-death`
//! and `x-first-death-reason = delivery_limit`).

mod queue;

pub use queue::{DeadLetter, DeadLetters};

use crate::protocol::set_header;
use chrono::Utc;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use std::fmt;

/// Header: why the message was dead-lettered (a [`Reason`] in kebab case).
pub const REASON_HEADER: &str = "x-lepus-reason";
/// Header: the error in words.
pub const ERROR_HEADER: &str = "x-lepus-error";
/// Header: the queue the message came from.
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
    /// The arguments do not decode into the job's input type.
    BadInput,
    /// The body is larger than the worker accepts.
    TooLarge,
    /// The job failed on its last allowed attempt (or said not to retry).
    Failed,
}

impl Reason {
    /// The header value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Undecodable => "undecodable",
            Reason::UnknownJob => "unknown-job",
            Reason::BadInput => "bad-input",
            Reason::TooLarge => "too-large",
            Reason::Failed => "failed",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Headers that describe a death (ours and the broker's), removed when a dead letter is revived.
const DEATH_HEADERS: &[&str] = &[
    REASON_HEADER,
    ERROR_HEADER,
    QUEUE_HEADER,
    WORKER_HEADER,
    TIME_HEADER,
    ATTEMPTS_HEADER,
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
];

/// The properties of a dead letter sent back to its queue: death headers removed, `retries`
/// reset to 0 and `eta` cleared, so it runs at once with all its attempts.
#[must_use]
pub fn revived(dead: &BasicProperties) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (key, value) in dead.headers().clone().unwrap_or_default().inner() {
        if !DEATH_HEADERS.contains(&key.as_str()) {
            headers.insert(key.clone(), value.clone());
        }
    }
    crate::protocol::rescheduled(&dead.clone().with_headers(headers), 0, None)
}

/// The original properties with the dead-letter headers added; `attempts` is how many times the
/// job ran.
#[must_use]
pub fn mark(original: &BasicProperties, reason: Reason, error: &str, queue: &str, attempts: u32) -> BasicProperties {
    let mut headers = original.headers().clone().unwrap_or_default();
    headers.insert(ATTEMPTS_HEADER.into(), AMQPValue::LongLongInt(i64::from(attempts)));
    set_header(&mut headers, REASON_HEADER, reason.as_str());
    set_header(&mut headers, ERROR_HEADER, error);
    set_header(&mut headers, QUEUE_HEADER, queue);
    set_header(&mut headers, WORKER_HEADER, crate::protocol::node_name());
    set_header(&mut headers, TIME_HEADER, &Utc::now().to_rfc3339());
    original.clone().with_headers(headers).with_delivery_mode(2)
}
