//! Dead letters: messages a worker refused or the broker gave up on, kept in the work queue's
//! dead-letter queue with the reason in their headers.
//!
//! A worker dead-letters by publishing the original body and properties to `<queue>.dlq` with
//! these headers added, waiting for the confirm, and only then acking the original. The broker
//! dead-letters on its own when a message exceeds the queue's delivery limit (it adds `x-death`
//! and `x-first-death-reason = delivery_limit`).

use crate::protocol::set_header;
use chrono::Utc;
use lapin::BasicProperties;
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
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The original properties with the dead-letter headers added.
#[must_use]
pub fn mark(original: &BasicProperties, reason: Reason, error: &str, queue: &str) -> BasicProperties {
    let mut headers = original.headers().clone().unwrap_or_default();
    set_header(&mut headers, REASON_HEADER, reason.as_str());
    set_header(&mut headers, ERROR_HEADER, error);
    set_header(&mut headers, QUEUE_HEADER, queue);
    set_header(&mut headers, WORKER_HEADER, crate::protocol::node_name());
    set_header(&mut headers, TIME_HEADER, &Utc::now().to_rfc3339());
    original.clone().with_headers(headers).with_delivery_mode(2)
}
