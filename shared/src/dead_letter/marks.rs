//! Marking a message dead (the headers a worker adds), reviving it (the death headers removed),
//! and reading how many times the broker handed it out.

use super::reason::{ATTEMPTS_HEADER, ERROR_HEADER, QUEUE_HEADER, REASON_HEADER, Reason, TIME_HEADER, WORKER_HEADER};
use crate::protocol::amqp_value::to_json;
use crate::protocol::headers::{node_name, set_header, without};
use crate::protocol::task::rescheduled;
use chrono::Utc;
use lapin::BasicProperties;
use lapin::types::AMQPValue;

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
    rescheduled(&dead.clone().with_headers(headers), 0, None)
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
    set_header(&mut headers, WORKER_HEADER, node_name());
    set_header(&mut headers, TIME_HEADER, &Utc::now().to_rfc3339());
    original.clone().with_headers(headers).with_delivery_mode(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::headers::header_str;
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
        assert_eq!(header_str(&headers, REASON_HEADER).as_deref(), Some("delivery-limit"));
        assert_eq!(header_str(&headers, "task").as_deref(), Some("demo.add"));

        let revived = revived(&marked).headers().clone().unwrap_or_default();
        assert!(DEATH_HEADERS.iter().all(|name| !revived.contains_key(name)), "{revived:?}");
        assert_eq!(header_str(&revived, "task").as_deref(), Some("demo.add"));

        let again = rescheduled(&delivered, 1, None).headers().clone().unwrap_or_default();
        assert!(!again.contains_key(DELIVERY_COUNT_HEADER), "{again:?}");
    }
}
