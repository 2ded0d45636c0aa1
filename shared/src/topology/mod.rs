//! All AMQP topology: every queue and exchange name Lepus uses, their arguments, and the one
//! idempotent path that declares them. No other module names a queue or an exchange.
//!
//! - **Work queue** `<name>` (default `lepus`): quorum, durable; dead-letters to `<name>.dlq`
//!   through the default exchange, at least once; `x-delivery-limit` stops poison messages.
//!   Jobs are published to the default exchange with the queue name as routing key.
//! - **Dead-letter queue** `<name>.dlq`: quorum, durable. Holds messages a worker refused or
//!   gave up on (among them those at the delivery limit), each with an `x-lepus-reason` header,
//!   and any the broker dead-lettered itself (with its `x-death` header).
//! - **Reply queue** `lepus.reply.<client id>`: one per client, classic, durable (quorum for a
//!   client given a cluster's nodes, so it outlives the loss of one), expires after it has been
//!   unused for a while (`x-expires`), so results survive a client's reconnect and a broker
//!   restart but never pile up after the client is gone.
//! - **Batches**: three queues however many batches there are (see `batches.rs`): the records
//!   `lepus.batch.records` (quorum, single active consumer), the tracker's state
//!   `lepus.batch.state` (quorum) and the progress stream `lepus.batch.progress` (stream,
//!   `x-max-age` = the worker setting `batch_retention`, default 7 days).
//! - **Scheduler lock** `lepus.scheduler.<group>.leader`: classic, exclusive. The replica of
//!   scheduler group `<group>` whose connection declared it leads; the others retry until its
//!   connection dies. Groups (default `default`) keep unrelated schedulers apart.
//! - **Leader announcements** `lepus.scheduler.<group>.leader-info`: classic, transient, at most
//!   one message: the node name of the replica that last took the lead, and when. Read together with
//!   the lock, it tells who leads (see `lepus_scheduler::leader`).
//! - **Schedule state** `lepus.schedule.<group>.<schedule name>`: quorum, durable, at most one
//!   message: the schedule's last fire time, replaced in the same transaction as each firing.
//! - **Delay cascades**: Lepus's own (`lepus.delay`, the quorum queues `lepus.delay.<level>.<digit>`,
//!   `lepus.delay.delivery`: a delay's base-8 digits in 1/8 s ticks) and Celery's (kombu's
//!   `celery_delayed_27` … `celery_delayed_0`, `celery_delayed_delivery`), every work queue bound
//!   to the bottom of both; `lepus.delayed.unroutable` keeps delayed messages whose queue is gone.
//!   See `cascade.rs`.
//! - **Celery's remote control and events** (`celery.pidbox`, `reply.celery.pidbox`, `celeryev`):
//!   see [`control`].
//! - **Rate limits** (`lepus.rate.<key>`, `.issuer`, `.issuer-info`): a bounded token bucket, the
//!   issuer's lock and its announcement per rate key; see `rates.rs`.
//! - **Data events** between services (`lepus.events.in`, the stream `lepus.events.log`,
//!   `lepus.events`, `lepus.events.unrouted`, `lepus.service.<name>` and its partitions): see
//!   `events.rs`.
//! - **Concurrency keys**: per key and limit, a classic queue of slot messages
//!   `lepus.slots.<key>.<limit>` and, while it is created, its lock and marker: see `slots.rs`.
//!
//! On a cluster every quorum queue gets a member on each node: RabbitMQ's default, so no
//! `x-quorum-initial-group-size` is set. Adding it would make redeclaring a queue declared without
//! it fail (`PRECONDITION_FAILED`, on RabbitMQ 3.10), for users upgrading and for Celery alike.

mod batches;
mod cascade;
mod control;
mod events;
mod rates;
mod slots;
mod tiers;
mod unique;

pub use batches::*;
pub use cascade::*;
pub use control::*;
pub use events::*;
pub use rates::*;
pub use slots::*;
pub use tiers::*;
pub use unique::*;

use crate::broker::Broker;
use crate::error::{Error, ReplyCode, Result};
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
    /// Where its dead letters go, when not `<name>.dlq` (a service's partitions share one).
    dead_letters: Option<String>,
    /// Whether one consumer at a time gets its messages (an ordered service's partitions).
    single_active_consumer: bool,
}

impl WorkQueue {
    /// A work queue with the default delivery limit; the name is checked.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        validate_queue_name(&name)?;
        Ok(Self { name, delivery_limit: DEFAULT_DELIVERY_LIMIT, dead_letters: None, single_active_consumer: false })
    }

    /// Sets the queue's `x-delivery-limit`: how many times a message may be handed back (a worker
    /// died or lost its connection while it held it) before it is dead-lettered.
    #[must_use]
    pub fn with_delivery_limit(mut self, limit: u32) -> Self {
        self.delivery_limit = limit;
        self
    }

    /// The queue's `x-delivery-limit`.
    #[must_use]
    pub fn delivery_limit(&self) -> u32 {
        self.delivery_limit
    }

    /// The queue's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of this queue's dead-letter queue.
    #[must_use]
    pub fn dead_letter_queue(&self) -> String {
        self.dead_letters.clone().unwrap_or_else(|| dead_letter_queue(&self.name))
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
        if self.single_active_consumer {
            args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        }
        args
    }

    /// Declares the delay cascades, the dead-letter queue and the work queue, and binds the work
    /// queue to the cascades' delivery exchanges. Idempotent; fails with the broker's explanation
    /// when the queue exists with other arguments.
    pub async fn declare(&self, channel: &Channel) -> Result<()> {
        declare_delay_cascades(channel).await?;
        let dlq = self.dead_letter_queue();
        let mut dlq_args = FieldTable::default();
        put_str(&mut dlq_args, "x-queue-type", "quorum");
        declare_queue(channel, &dlq, durable(), dlq_args).await?;
        declare_queue(channel, &self.name, durable(), self.arguments()).await?;
        bind_to_cascades(channel, &self.name).await
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

/// Declares a reply queue that the broker deletes after `expires` without consumers or use:
/// classic, on the node the client is connected to, or for a client of a cluster `replicated`, a
/// quorum queue, so that results wait for it on the other nodes while its node is down.
pub async fn declare_reply_queue(channel: &Channel, name: &str, expires: Duration, replicated: bool) -> Result<()> {
    let mut args = FieldTable::default();
    let millis = i64::try_from(expires.as_millis()).unwrap_or(i64::MAX).max(1);
    args.insert("x-expires".into(), AMQPValue::LongLongInt(millis));
    if replicated {
        put_str(&mut args, "x-queue-type", "quorum");
    }
    declare_queue(channel, name, durable(), args).await
}

/// The exclusive queue whose holder leads scheduler group `group`.
#[must_use]
pub fn scheduler_lock_queue(group: &str) -> String {
    format!("lepus.scheduler.{group}.leader")
}

/// Tries to take the lock of scheduler group `group` on `channel`: declares its exclusive lock
/// queue. Fails with `RESOURCE_LOCKED` (and the broker closes the channel) while another
/// connection holds it.
pub async fn take_scheduler_lock(channel: &Channel, group: &str) -> Result<()> {
    validate_name("scheduler group", group)?;
    let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
    declare_queue(channel, &scheduler_lock_queue(group), options, FieldTable::default()).await
}

/// The queue in which the leader of scheduler group `group` says who it is.
#[must_use]
pub fn scheduler_leader_queue(group: &str) -> String {
    format!("lepus.scheduler.{group}.leader-info")
}

/// Declares the queue of leader announcements of scheduler group `group`: a leader puts one
/// there when it takes the lead; only the latest is kept. A classic transient queue: it can be
/// read the moment it is declared (a new quorum queue refuses `basic.get` while it starts), and a
/// new leader declares it anew after a restart or the loss of its node.
pub async fn declare_scheduler_leader_info(channel: &Channel, group: &str) -> Result<()> {
    validate_name("scheduler group", group)?;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
    declare_queue(channel, &scheduler_leader_queue(group), QueueDeclareOptions::default(), args).await
}

/// The state queue of schedule `name` in scheduler group `group`.
#[must_use]
pub fn schedule_state_queue(group: &str, name: &str) -> String {
    format!("lepus.schedule.{group}.{name}")
}

/// Declares the state queue of a schedule: it keeps only the latest message.
pub async fn declare_schedule_state(channel: &Channel, group: &str, name: &str) -> Result<()> {
    validate_name("schedule", name)?;
    let mut args = FieldTable::default();
    put_str(&mut args, "x-queue-type", "quorum");
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
    declare_queue(channel, &schedule_state_queue(group, name), durable(), args).await
}

/// What the broker says of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueState {
    /// Messages ready for delivery (not counting those delivered and not yet acked).
    pub messages: u32,
    /// Consumers attached.
    pub consumers: u32,
}

/// Looks queue `name` up without changing it: a passive declare on a channel of its own (a
/// missing queue closes the channel it is asked on). `None` if there is no such queue.
pub async fn inspect_queue(broker: &Broker, name: &str) -> Result<Option<QueueState>> {
    let channel = broker.channel().await?;
    let state = inspect_queue_on(&channel, name).await;
    if channel.status().connected() {
        drop(channel.close(200, "inspected".into()).await);
    }
    state
}

/// Like [`inspect_queue`], on `channel`, which is closed by the broker if the queue is missing:
/// give it a channel opened for this alone.
pub async fn inspect_queue_on(channel: &Channel, name: &str) -> Result<Option<QueueState>> {
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    match channel.queue_declare(name.into(), passive, FieldTable::default()).await {
        Ok(queue) => Ok(Some(QueueState { messages: queue.message_count(), consumers: queue.consumer_count() })),
        Err(e) if ReplyCode::of(&e) == Some(ReplyCode::NotFound) => Ok(None),
        Err(e) => Err(Error::amqp("passive queue declare")(e)),
    }
}

/// Checks that `name` can be a Lepus work queue.
pub fn validate_queue_name(name: &str) -> Result<()> {
    validate_name("queue", name)
}

/// Checks a name that becomes part of a queue name (a queue, a batch id, a schedule name).
pub fn validate_name(kind: &'static str, name: &str) -> Result<()> {
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
    Err(Error::InvalidName { kind, name: name.to_owned(), reason })
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
