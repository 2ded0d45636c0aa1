//! The topology of Celery's remote control and monitoring, named and declared exactly as kombu
//! does (a mismatch would be refused by the broker when Celery's own tools declare them too):
//!
//! | name | kind | purpose |
//! |---|---|---|
//! | `celery.pidbox` | fanout exchange, transient | commands broadcast to every node |
//! | `<node>.celery.pidbox` | queue, exclusive, auto-delete, `x-message-ttl` 300 s, `x-expires` 10 s | one node's commands |
//! | `reply.celery.pidbox` | direct exchange, transient | replies, routed by the asker's mailbox id |
//! | `<oid>.reply.celery.pidbox` | queue, exclusive, auto-delete, `x-expires` 10 s | one asker's replies |
//! | `celeryev` | topic exchange, durable | monitoring events, routed by type (`task.succeeded`) |

use crate::error::{Error, Result};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

/// The exchange remote-control commands are broadcast on.
pub const CONTROL_EXCHANGE: &str = "celery.pidbox";

/// The exchange nodes reply on.
pub const CONTROL_REPLY_EXCHANGE: &str = "reply.celery.pidbox";

/// The exchange of monitoring events.
pub const EVENT_EXCHANGE: &str = "celeryev";

/// The command queue of the node named `node`.
#[must_use]
pub fn pidbox_queue(node: &str) -> String {
    format!("{node}.celery.pidbox")
}

/// The reply queue of the asker whose mailbox id is `oid`.
#[must_use]
pub fn control_reply_queue(oid: &str) -> String {
    format!("{oid}.{CONTROL_REPLY_EXCHANGE}")
}

/// Declares both control exchanges.
pub async fn declare_control_exchanges(channel: &Channel) -> Result<()> {
    declare_exchange(channel, CONTROL_EXCHANGE, ExchangeKind::Fanout, false).await?;
    declare_exchange(channel, CONTROL_REPLY_EXCHANGE, ExchangeKind::Direct, false).await
}

/// Declares node `node`'s command queue, bound to the command exchange. It is exclusive: a
/// second process with the same node name is refused (`RESOURCE_LOCKED`).
pub async fn declare_pidbox(channel: &Channel, node: &str) -> Result<()> {
    declare_control_exchanges(channel).await?;
    let queue = pidbox_queue(node);
    declare_transient(channel, &queue, 300_000).await?;
    bind(channel, &queue, CONTROL_EXCHANGE, "").await
}

/// Declares the reply queue of mailbox `oid`, bound to the reply exchange by `oid`.
pub async fn declare_control_reply_queue(channel: &Channel, oid: &str) -> Result<()> {
    declare_control_exchanges(channel).await?;
    let queue = control_reply_queue(oid);
    declare_transient(channel, &queue, 300_000).await?;
    bind(channel, &queue, CONTROL_REPLY_EXCHANGE, oid).await
}

/// Declares the event exchange.
pub async fn declare_event_exchange(channel: &Channel) -> Result<()> {
    declare_exchange(channel, EVENT_EXCHANGE, ExchangeKind::Topic, true).await
}

async fn declare_exchange(channel: &Channel, name: &str, kind: ExchangeKind, durable: bool) -> Result<()> {
    let options = ExchangeDeclareOptions { durable, ..ExchangeDeclareOptions::default() };
    channel
        .exchange_declare(name.into(), kind, options, FieldTable::default())
        .await
        .map_err(Error::amqp("exchange declare"))
}

/// An exclusive, auto-deleted queue whose messages live `ttl_ms` and that goes 10 s after its
/// last consumer.
async fn declare_transient(channel: &Channel, name: &str, ttl_ms: i64) -> Result<()> {
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl_ms));
    args.insert("x-expires".into(), AMQPValue::LongLongInt(10_000));
    args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("classic")));
    let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(name.into(), options, args).await.map(drop).map_err(Error::amqp("queue declare"))
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> Result<()> {
    channel
        .queue_bind(queue.into(), exchange.into(), key.into(), QueueBindOptions::default(), FieldTable::default())
        .await
        .map_err(Error::amqp("queue bind"))
}
