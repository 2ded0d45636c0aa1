//! All AMQP topology: every queue and exchange name Lepus uses, their arguments, and the one
//! idempotent path that declares them. No other module names a queue or an exchange.
//!
//! - **Work queue** `<name>` (default `lepus`): quorum, durable; dead-letters to `<name>.dlq`
//!   through the default exchange, at least once; `x-delivery-limit` stops poison messages.
//!   Jobs are published to the default exchange with the queue name as routing key.
//! - **Dead-letter queue** `<name>.dlq`: quorum, durable. Holds messages the broker gave up on
//!   (delivery limit) and messages a worker refused, each with an `x-lepus-reason` header.
//! - **Reply queue** `lepus.reply.<client id>`: one per client, classic, durable, expires after
//!   it has been unused for a while (`x-expires`), so results survive a client's reconnect and a
//!   broker restart but never pile up after the client is gone.

use crate::error::{Error, Result};
use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use std::time::Duration;

/// The queue jobs go to when nothing else is said.
pub const DEFAULT_QUEUE: &str = "lepus";

/// How many times the broker delivers a message before dead-lettering it, unless configured.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 5;

/// Longest accepted queue name: the broker's limit (255 bytes) minus room for the suffixes and
/// routing-key prefixes Lepus adds.
const MAX_QUEUE_NAME: usize = 190;

/// A work queue and the settings that become its queue arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkQueue {
    name: String,
    delivery_limit: u32,
}

impl WorkQueue {
    /// A work queue with the default delivery limit; the name is checked.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        validate_queue_name(&name)?;
        Ok(Self { name, delivery_limit: DEFAULT_DELIVERY_LIMIT })
    }

    /// Sets how many deliveries the broker attempts before dead-lettering a message.
    #[must_use]
    pub fn with_delivery_limit(mut self, limit: u32) -> Self {
        self.delivery_limit = limit;
        self
    }

    /// The queue's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of this queue's dead-letter queue.
    #[must_use]
    pub fn dead_letter_queue(&self) -> String {
        dead_letter_queue(&self.name)
    }

    /// The arguments the work queue is declared with. Any other client declaring the same queue
    /// (a Python Celery app, say) must use exactly these.
    #[must_use]
    pub fn arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        put_str(&mut args, "x-queue-type", "quorum");
        put_str(&mut args, "x-dead-letter-exchange", "");
        put_str(&mut args, "x-dead-letter-routing-key", &self.dead_letter_queue());
        put_str(&mut args, "x-dead-letter-strategy", "at-least-once");
        put_str(&mut args, "x-overflow", "reject-publish");
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(i64::from(self.delivery_limit)));
        args
    }

    /// Declares the dead-letter queue and the work queue. Idempotent; fails with the broker's
    /// explanation when the queue exists with other arguments.
    pub async fn declare(&self, channel: &Channel) -> Result<()> {
        let dlq = self.dead_letter_queue();
        let mut dlq_args = FieldTable::default();
        put_str(&mut dlq_args, "x-queue-type", "quorum");
        declare_queue(channel, &dlq, durable(), dlq_args).await?;
        declare_queue(channel, &self.name, durable(), self.arguments()).await
    }
}

/// The dead-letter queue of work queue `queue`.
#[must_use]
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dlq")
}

/// The reply queue of the client with id `client_id`.
#[must_use]
pub fn reply_queue(client_id: &str) -> String {
    format!("lepus.reply.{client_id}")
}

/// Declares a reply queue that the broker deletes after `expires` without consumers or use.
pub async fn declare_reply_queue(channel: &Channel, name: &str, expires: Duration) -> Result<()> {
    let mut args = FieldTable::default();
    let millis = i64::try_from(expires.as_millis()).unwrap_or(i64::MAX).max(1);
    args.insert("x-expires".into(), AMQPValue::LongLongInt(millis));
    declare_queue(channel, name, durable(), args).await
}

/// Checks that `name` can be a Lepus work queue.
pub fn validate_queue_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name.len() > MAX_QUEUE_NAME {
        "longer than 190 bytes"
    } else if name.starts_with("amq.") {
        "names starting with `amq.` are reserved by RabbitMQ"
    } else if name.contains(['*', '#']) || name.chars().any(char::is_whitespace) {
        "must not contain `*`, `#` or white space"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName { kind: "queue", name: name.to_owned(), reason })
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() }
}

async fn declare_queue(channel: &Channel, name: &str, options: QueueDeclareOptions, args: FieldTable) -> Result<()> {
    channel.queue_declare(ShortString::from(name), options, args).await.map(drop).map_err(Error::amqp("queue declare"))
}

fn put_str(table: &mut FieldTable, key: &str, value: &str) {
    table.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_checked() {
        assert!(WorkQueue::new("emails.high").is_ok());
        for bad in ["", "amq.gen-x", "a*b", "a#", "has space", &"x".repeat(191)] {
            assert!(WorkQueue::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn work_queues_dead_letter_to_their_dlq() {
        let q = WorkQueue::new("jobs").expect("valid").with_delivery_limit(3);
        let args = q.arguments();
        let get = |k: &str| args.inner().get(k).cloned();
        assert_eq!(get("x-dead-letter-routing-key"), Some(AMQPValue::LongString("jobs.dlq".into())));
        assert_eq!(get("x-delivery-limit"), Some(AMQPValue::LongLongInt(3)));
        assert_eq!(get("x-queue-type"), Some(AMQPValue::LongString("quorum".into())));
    }
}
