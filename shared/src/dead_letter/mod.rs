//! Dead letters: messages a worker refused, jobs that failed for good, and messages the broker
//! gave up on, kept in the work queue's dead-letter queue with the reason in their headers; and
//! [`DeadLetters`], to list them, send them back to their queue, or purge them.
//!
//! A worker dead-letters by publishing the original body and properties to `<queue>.dlq` with
//! these headers added, waiting for the confirm, and only then acking the original. The broker
//! does not get to dead-letter a message for its delivery limit in the usual case: a worker that
//! receives a message the broker has already handed out `limit` times (each time its worker died
//! or lost its connection) dead-letters it itself, as `delivery-limit`, and answers its caller.
//! Should that worker die too, the broker dead-letters the message (adding `x-death` and
//! `x-first-death-reason = delivery_limit`).

mod queue;

pub use queue::{DeadLetter, DeadLetters};

use crate::protocol::amqp_value::to_json;
use crate::protocol::{set_header, without};
use chrono::Utc;
use lapin::BasicProperties;
use lapin::types::AMQPValue;
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
    /// The broker has handed the message out as many times as the queue's delivery limit allows,
    /// and each time the worker running it died or lost its connection.
    DeliveryLimit,
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
            Reason::DeliveryLimit => "delivery-limit",
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
    DELIVERY_COUNT_HEADER,
];

/// The properties of a dead letter sent back to its queue: death headers removed, `retries`
/// reset to 0 and `eta` cleared, so it runs at once with all its attempts.
#[must_use]
pub fn revived(dead: &BasicProperties) -> BasicProperties {
    let headers = without(dead.headers().as_ref(), DEATH_HEADERS);
    crate::protocol::rescheduled(&dead.clone().with_headers(headers), 0, None)
}

/// The header in which a quorum queue says how many times it handed the message out before
/// without it being settled (absent the first time).
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// How many times the broker handed this delivery's message out before without it being settled.
#[must_use]
pub fn delivery_count(delivered: &BasicProperties) -> u64 {
    let count = delivered.headers().as_ref().and_then(|headers| headers.inner().get(DELIVERY_COUNT_HEADER));
    count.map(to_json).and_then(|count| count.as_u64()).unwrap_or(0)
}

/// The original properties with the dead-letter headers added; `attempts` is how many times the
/// job ran. The broker's delivery count is left out: it belongs to the work queue, not to the copy.
#[must_use]
pub fn mark(original: &BasicProperties, reason: Reason, error: &str, queue: &str, attempts: u32) -> BasicProperties {
    let mut headers = without(original.headers().as_ref(), &[DELIVERY_COUNT_HEADER]);
    headers.insert(ATTEMPTS_HEADER.into(), AMQPValue::LongLongInt(i64::from(attempts)));
    set_header(&mut headers, REASON_HEADER, reason.as_str());
    set_header(&mut headers, ERROR_HEADER, error);
    set_header(&mut headers, QUEUE_HEADER, queue);
    set_header(&mut headers, WORKER_HEADER, crate::protocol::node_name());
    set_header(&mut headers, TIME_HEADER, &Utc::now().to_rfc3339());
    original.clone().with_headers(headers).with_delivery_mode(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldTable;

    fn delivered_with(count: AMQPValue) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(DELIVERY_COUNT_HEADER.into(), count);
        set_header(&mut headers, "task", "demo.add");
        BasicProperties::default().with_headers(headers)
    }

    #[test]
    fn the_delivery_count_reads_any_integer_and_defaults_to_zero() {
        assert_eq!(delivery_count(&BasicProperties::default()), 0);
        assert_eq!(delivery_count(&delivered_with(AMQPValue::LongLongInt(3))), 3);
        assert_eq!(delivery_count(&delivered_with(AMQPValue::LongInt(2))), 2);
        assert_eq!(delivery_count(&delivered_with(AMQPValue::ShortShortUInt(1))), 1);
        assert_eq!(delivery_count(&delivered_with(AMQPValue::LongLongInt(-1))), 0);
    }

    #[test]
    fn copies_leave_the_work_queues_delivery_count_behind() {
        let delivered = delivered_with(AMQPValue::LongLongInt(5));
        let marked = mark(&delivered, Reason::DeliveryLimit, "crashed", "jobs", 5);
        let headers = marked.headers().clone().unwrap_or_default();
        assert!(!headers.contains_key(DELIVERY_COUNT_HEADER), "{headers:?}");
        assert_eq!(crate::protocol::header_str(&headers, REASON_HEADER).as_deref(), Some("delivery-limit"));
        assert_eq!(crate::protocol::header_str(&headers, "task").as_deref(), Some("demo.add"));

        let revived = revived(&marked).headers().clone().unwrap_or_default();
        assert!(DEATH_HEADERS.iter().all(|name| !revived.contains_key(name)), "{revived:?}");
        assert_eq!(crate::protocol::header_str(&revived, "task").as_deref(), Some("demo.add"));

        let again = crate::protocol::rescheduled(&delivered, 1, None).headers().clone().unwrap_or_default();
        assert!(!again.contains_key(DELIVERY_COUNT_HEADER), "{again:?}");
    }
}
