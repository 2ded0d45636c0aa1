//! The topology of data events between services (see `crate::event`), not to be confused with
//! Celery's monitoring events (`celeryev`, in `control.rs`).
//!
//! ```text
//! publisher ──▶ lepus.events.in (fanout) ──▶ lepus.events.log (stream: every event, for replay)
//!                      │ exchange-to-exchange
//!                      ▼
//!               lepus.events (topic, by event name) ──▶ lepus.service.<name> (quorum), per pattern
//!                      │ alternate exchange               or, for an ordered service,
//!                      ▼                                  lepus.service.<name> (headers exchange)
//!               lepus.events.unrouted (fanout)              ──▶ lepus.service.<name>.p<i> by slot
//!                      ▼
//!               lepus.events.unrouted (quorum, newest 10,000)
//! ```
//!
//! One publish to `lepus.events.in` reaches the stream and every subscribed service in the same
//! routing decision of the broker, under one confirm. RabbitMQ applies an exchange's alternate
//! exchange per exchange while it routes, so an event that no service's pattern matches still
//! lands in the stream, and also in `lepus.events.unrouted`: counted and visible, not an error.
//!
//! A service's queue is a work queue in all but its name (`lepus.service.<name>`, dead letters in
//! `lepus.service.<name>.dlq`, the delivery limit, bound to the delay cascade for retries), bound
//! to `lepus.events` once per pattern. An ordered service has instead `partitions` queues
//! `lepus.service.<name>.p<i>` with a single active consumer each, fed by a headers exchange
//! `lepus.service.<name>` that `lepus.events` feeds by the patterns: partition `i` takes the
//! events whose `x-lepus-slot` header `s` (a hash of the event's key, `0..EVENT_SLOTS`) has
//! `s % partitions == i`; an event without a slot header goes through the headers exchange's
//! alternate exchange `lepus.service.<name>.unslotted` to partition 0. They share the service's
//! dead-letter queue.
//!
//! A new service that replays the stream (see the worker's `replay`) has, while it replays, a
//! record queue `lepus.service.<name>.replay` (why and from where it replays: it outlives a
//! crash, so the next process resumes) and an exclusive lock queue
//! `lepus.service.<name>.replay.lock` (one process replays at a time). Its markers are messages
//! published straight to the stream (default exchange), with header [`REPLAY_MARKER_HEADER`] and
//! no event name or id, so they decode as no event.

use super::{WorkQueue, declare_queue, durable, put_str, validate_name};
use crate::error::{Error, ReplyCode, Result};
use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use std::time::Duration;

/// Where publishers send events: a fanout exchange to the stream and to [`EVENTS_EXCHANGE`].
pub const EVENTS_INBOUND_EXCHANGE: &str = "lepus.events.in";

/// The stream every published event is appended to, kept for the [`EventLog`] retention.
pub const EVENT_LOG_STREAM: &str = "lepus.events.log";

/// The topic exchange services bind to, by event name (`orders.created`, `orders.*`, `#.created`).
pub const EVENTS_EXCHANGE: &str = "lepus.events";

/// The alternate exchange of [`EVENTS_EXCHANGE`], and the queue bound to it: events no service
/// subscribes to.
pub const UNROUTED_EVENTS: &str = "lepus.events.unrouted";

/// How many unrouted events [`UNROUTED_EVENTS`] keeps (the oldest go first).
pub const UNROUTED_EVENTS_KEPT: i64 = 10_000;

/// The header carrying an event's slot: a stable hash of its key (or, without a key, its id)
/// modulo [`EVENT_SLOTS`]. Ordered services partition by it.
pub const SLOT_HEADER: &str = "x-lepus-slot";

/// How many slots events hash into; an ordered service has at most this many partitions.
pub const EVENT_SLOTS: u16 = 64;

/// The event stream's retention (`x-max-age`, `x-max-length-bytes`): whoever declares the
/// stream first sets it; a process asking for another fails with [`Error::EventLog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLog {
    /// How long events are kept (whole seconds). Default 7 days.
    pub max_age: Duration,
    /// How many bytes are kept at most; the oldest segments go first. Default 5 GiB.
    pub max_bytes: u64,
}

impl Default for EventLog {
    fn default() -> Self {
        Self { max_age: Duration::from_secs(7 * 24 * 3600), max_bytes: 5 << 30 }
    }
}

impl EventLog {
    /// The stream's `x-max-age`: whole seconds, `<n>s`.
    fn max_age_argument(&self) -> String {
        format!("{}s", self.max_age.as_secs().max(1))
    }
}

/// The stream's segment size: retention drops whole segments, so keep them small.
const EVENT_LOG_SEGMENT_BYTES: i64 = 64 << 20;

async fn declare_exchange(channel: &Channel, name: &str, kind: ExchangeKind, args: FieldTable) -> Result<()> {
    let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel.exchange_declare(name.into(), kind, options, args).await.map_err(Error::amqp("exchange declare"))
}

async fn bind_exchange(channel: &Channel, destination: &str, source: &str, key: &str, args: FieldTable) -> Result<()> {
    channel
        .exchange_bind(destination.into(), source.into(), key.into(), ExchangeBindOptions::default(), args)
        .await
        .map_err(Error::amqp("exchange bind"))
}

async fn bind_queue(channel: &Channel, queue: &str, exchange: &str, key: &str, args: FieldTable) -> Result<()> {
    channel
        .queue_bind(queue.into(), exchange.into(), key.into(), QueueBindOptions::default(), args)
        .await
        .map_err(Error::amqp("queue bind"))
}

/// Declares the event exchanges, the unrouted queue and the stream, and binds them. Idempotent.
/// A stream declared before with another retention is [`Error::EventLog`]; the broker closes
/// `channel`.
pub async fn declare_events(channel: &Channel, log: &EventLog) -> Result<()> {
    let mut unrouted = FieldTable::default();
    put_str(&mut unrouted, "x-queue-type", "quorum");
    unrouted.insert("x-max-length".into(), AMQPValue::LongLongInt(UNROUTED_EVENTS_KEPT));
    put_str(&mut unrouted, "x-overflow", "drop-head");
    declare_queue(channel, UNROUTED_EVENTS, durable(), unrouted).await?;
    declare_exchange(channel, UNROUTED_EVENTS, ExchangeKind::Fanout, FieldTable::default()).await?;
    bind_queue(channel, UNROUTED_EVENTS, UNROUTED_EVENTS, "", FieldTable::default()).await?;

    let mut topic = FieldTable::default();
    put_str(&mut topic, "alternate-exchange", UNROUTED_EVENTS);
    declare_exchange(channel, EVENTS_EXCHANGE, ExchangeKind::Topic, topic).await?;
    declare_exchange(channel, EVENTS_INBOUND_EXCHANGE, ExchangeKind::Fanout, FieldTable::default()).await?;

    let mut stream = FieldTable::default();
    put_str(&mut stream, "x-queue-type", "stream");
    put_str(&mut stream, "x-max-age", &log.max_age_argument());
    let max_bytes = i64::try_from(log.max_bytes).unwrap_or(i64::MAX);
    stream.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(max_bytes));
    stream.insert("x-stream-max-segment-size-bytes".into(), AMQPValue::LongLongInt(EVENT_LOG_SEGMENT_BYTES));
    match declare_queue(channel, EVENT_LOG_STREAM, durable(), stream).await {
        Err(e) if e.reply_code() == Some(ReplyCode::PreconditionFailed) => {
            return Err(Error::EventLog {
                max_age: log.max_age_argument(),
                max_bytes: log.max_bytes,
                reason: e.to_string(),
            });
        }
        declared => declared?,
    }
    bind_queue(channel, EVENT_LOG_STREAM, EVENTS_INBOUND_EXCHANGE, "", FieldTable::default()).await?;
    bind_exchange(channel, EVENTS_EXCHANGE, EVENTS_INBOUND_EXCHANGE, "", FieldTable::default()).await
}

/// The queue of unordered service `service`; also its headers exchange when it is ordered.
#[must_use]
pub fn service_queue(service: &str) -> String {
    format!("lepus.service.{service}")
}

/// The alternate exchange of ordered service `service`'s headers exchange: events without a slot
/// header (or with one out of range) go through it to partition 0.
#[must_use]
pub fn unslotted_exchange(service: &str) -> String {
    format!("lepus.service.{service}.unslotted")
}

/// Partition `index` of ordered service `service`.
#[must_use]
pub fn partition_queue(service: &str, index: u16) -> String {
    format!("lepus.service.{service}.p{index}")
}

/// The header of a replay marker in [`EVENT_LOG_STREAM`]: its value is the marker's id. A
/// marker is not an event (no `x-lepus-event`, `type` or `message_id`): readers of the stream
/// skip it.
pub const REPLAY_MARKER_HEADER: &str = "x-lepus-replay-marker";

/// The properties of replay marker `id` (published to [`EVENT_LOG_STREAM`] by the default
/// exchange, with an empty body).
#[must_use]
pub fn replay_marker(id: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(REPLAY_MARKER_HEADER.into(), AMQPValue::LongString(LongString::from(id)));
    BasicProperties::default().with_delivery_mode(2).with_headers(headers)
}

/// The queue holding the record of service `service`'s unfinished replay; it exists only while
/// a replay is under way or was cut short.
#[must_use]
pub fn replay_record_queue(service: &str) -> String {
    format!("lepus.service.{service}.replay")
}

/// The exclusive queue whose holder replays service `service`.
#[must_use]
pub fn replay_lock_queue(service: &str) -> String {
    format!("lepus.service.{service}.replay.lock")
}

/// Declares service `service`'s replay record queue (quorum, durable).
pub async fn declare_replay_record(channel: &Channel, service: &str) -> Result<()> {
    validate_name("service", service)?;
    let mut args = FieldTable::default();
    put_str(&mut args, "x-queue-type", "quorum");
    declare_queue(channel, &replay_record_queue(service), durable(), args).await
}

/// Deletes service `service`'s replay record queue: its replay is done.
pub async fn delete_replay_record(channel: &Channel, service: &str) -> Result<()> {
    channel
        .queue_delete(replay_record_queue(service).as_str().into(), QueueDeleteOptions::default())
        .await
        .map(drop)
        .map_err(Error::amqp("queue delete"))
}

/// Tries to take the replay lock of service `service` on `channel` (its exclusive queue). Fails
/// with `RESOURCE_LOCKED` (and the broker closes the channel) while another connection holds it.
pub async fn take_replay_lock(channel: &Channel, service: &str) -> Result<()> {
    validate_name("service", service)?;
    let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
    declare_queue(channel, &replay_lock_queue(service), options, FieldTable::default()).await
}

/// A service's subscription as the broker sees it: the queues it consumes and their bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTopology {
    name: String,
    patterns: Vec<String>,
    partitions: Option<u16>,
    delivery_limit: u32,
}

impl ServiceTopology {
    /// Service `name` subscribed to `patterns` (topic patterns over event names), unordered or in
    /// `partitions` ordered partitions (1 to [`EVENT_SLOTS`]); the name and patterns are checked.
    pub fn new(name: &str, patterns: Vec<String>, partitions: Option<u16>, delivery_limit: u32) -> Result<Self> {
        validate_name("service", name)?;
        for pattern in &patterns {
            if pattern.is_empty() || pattern.len() > 255 || pattern.chars().any(char::is_whitespace) {
                return Err(Error::InvalidName {
                    kind: "event pattern",
                    name: pattern.clone(),
                    reason: "must be 1 to 255 bytes without white space",
                });
            }
        }
        if let Some(p) = partitions.filter(|p| *p == 0 || *p > EVENT_SLOTS) {
            return Err(Error::InvalidName {
                kind: "partition count",
                name: p.to_string(),
                reason: "an ordered service has 1 to 64 partitions",
            });
        }
        Ok(Self { name: name.to_owned(), patterns, partitions, delivery_limit })
    }

    /// The service's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic patterns the service binds (its handlers' event names and its extra patterns).
    #[must_use]
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// How many ordered partitions the service has; `None` when it is unordered.
    #[must_use]
    pub fn partitions(&self) -> Option<u16> {
        self.partitions
    }

    /// The service's dead-letter queue, `lepus.service.<name>.dlq`, for its partitions too.
    #[must_use]
    pub fn dead_letter_queue(&self) -> String {
        super::dead_letter_queue(&service_queue(&self.name))
    }

    /// The exchanges of the service's own: none for an unordered one; for an ordered one its
    /// headers exchange and that exchange's alternate (for events without a slot).
    #[must_use]
    pub fn exchanges(&self) -> Vec<String> {
        match self.partitions {
            None => Vec::new(),
            Some(_) => vec![service_queue(&self.name), unslotted_exchange(&self.name)],
        }
    }

    /// The queues the service's processes consume: its queue, or its partitions in order.
    #[must_use]
    pub fn queues(&self) -> Vec<WorkQueue> {
        let queue = |name: String| WorkQueue {
            name,
            delivery_limit: self.delivery_limit,
            dead_letters: Some(self.dead_letter_queue()),
            single_active_consumer: self.partitions.is_some(),
        };
        match self.partitions {
            None => vec![queue(service_queue(&self.name))],
            Some(partitions) => (0..partitions).map(|i| queue(partition_queue(&self.name, i))).collect(),
        }
    }

    /// Declares the service's queues (each a work queue: dead-letter queue, delay cascade) and
    /// binds them, for each pattern, to [`EVENTS_EXCHANGE`] (through the service's headers
    /// exchange, by slot, when ordered). Declare the events first ([`declare_events`]).
    /// Idempotent; bindings of patterns no longer subscribed stay until removed by hand.
    pub async fn declare(&self, channel: &Channel) -> Result<Vec<WorkQueue>> {
        let queues = self.queues();
        for queue in &queues {
            queue.declare(channel).await?;
        }
        let Some(partitions) = self.partitions else {
            for pattern in &self.patterns {
                bind_queue(channel, queues[0].name(), EVENTS_EXCHANGE, pattern, FieldTable::default()).await?;
            }
            return Ok(queues);
        };
        // An event without a slot header the headers exchange cannot route (a Python one, say)
        // goes to partition 0 through its alternate exchange, in publish order like the others.
        let unslotted = unslotted_exchange(&self.name);
        declare_exchange(channel, &unslotted, ExchangeKind::Fanout, FieldTable::default()).await?;
        bind_queue(channel, queues[0].name(), &unslotted, "", FieldTable::default()).await?;
        let exchange = service_queue(&self.name);
        let mut exchange_args = FieldTable::default();
        put_str(&mut exchange_args, "alternate-exchange", &unslotted);
        declare_exchange(channel, &exchange, ExchangeKind::Headers, exchange_args).await?;
        for pattern in &self.patterns {
            bind_exchange(channel, &exchange, EVENTS_EXCHANGE, pattern, FieldTable::default()).await?;
        }
        for slot in 0..EVENT_SLOTS {
            let mut args = FieldTable::default();
            // Plain `all` ignores headers starting with `x-`; `all-with-x` (RabbitMQ 3.10) matches them.
            put_str(&mut args, "x-match", "all-with-x");
            args.insert(SLOT_HEADER.into(), AMQPValue::LongLongInt(i64::from(slot)));
            let queue = &queues[usize::from(slot % partitions)];
            bind_queue(channel, queue.name(), &exchange, "", args).await?;
        }
        Ok(queues)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ordered_service_has_its_partitions_with_one_dead_letter_queue() {
        let service = ServiceTopology::new("billing", vec!["orders.*".into()], Some(4), 5).expect("valid");
        let queues = service.queues();
        let names: Vec<&str> = queues.iter().map(WorkQueue::name).collect();
        assert_eq!(
            names,
            [
                "lepus.service.billing.p0",
                "lepus.service.billing.p1",
                "lepus.service.billing.p2",
                "lepus.service.billing.p3"
            ]
        );
        for queue in &queues {
            assert_eq!(queue.dead_letter_queue(), "lepus.service.billing.dlq");
            let args = queue.arguments();
            assert_eq!(args.inner().get("x-single-active-consumer"), Some(&AMQPValue::Boolean(true)));
            assert_eq!(
                args.inner().get("x-dead-letter-routing-key"),
                Some(&AMQPValue::LongString("lepus.service.billing.dlq".into()))
            );
        }
        let unordered = ServiceTopology::new("mail", vec!["#".into()], None, 5).expect("valid");
        assert_eq!(unordered.queues()[0].name(), "lepus.service.mail");
        assert!(ServiceTopology::new("x", vec![], Some(65), 5).is_err());
        assert!(ServiceTopology::new("x", vec!["a b".into()], None, 5).is_err());
        assert!(ServiceTopology::new("a*", vec![], None, 5).is_err());
    }
}
