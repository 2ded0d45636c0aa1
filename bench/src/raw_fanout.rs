//! The raw side of `--fanout`: Lepus's event topology rebuilt with plain lapin under names of
//! the round's own, and a plain lapin publisher into it.
//!
//! The broker work is the same as for a Lepus publish: one `mandatory`, persistent, confirmed
//! publish to a fanout exchange (`<prefix>.in`, as `lepus.events.in`) that routes it to a stream
//! (`<prefix>.log`, declared with the arguments of `lepus.events.log`: 7 days, 5 GiB, 64 MiB
//! segments) and, exchange to exchange, to a topic exchange (`<prefix>.events`, as
//! `lepus.events`, with its alternate exchange and unrouted queue `<prefix>.unrouted`) where the
//! three service queues are bound by the event's name. The service queues are declared by
//! [`lepus::WorkQueue`], as a service's queue is (quorum, dead-letter queue, delivery limit). The
//! shared `lepus.events*` names cannot be given to another topology, hence a copy: its shape and
//! arguments are those of `lepus::internal::topology::declare_events`.
//!
//! Every raw event carries the very headers, properties and body of a Lepus event envelope
//! ([`lepus::Envelope::encode`] of one [`Happened`]), encoded once: the same bytes through the
//! broker, none of the per-event encoding.

use crate::admin::Admin;
use crate::lepus_service_role::Happened;
use anyhow::{Context, bail};
use lepus::lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lepus::lapin::types::{AMQPValue, FieldTable, LongString};
use lepus::lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use lepus::{Envelope, Event, EventLog, WorkQueue};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// What the unrouted queue keeps, as `lepus.events.unrouted`.
const UNROUTED_KEPT: i64 = 10_000;
/// The stream's segment size, as `lepus.events.log`'s.
const SEGMENT_BYTES: i64 = 64 << 20;

/// The raw copy of the event topology, by the prefix of its names.
#[derive(Debug, Clone)]
pub(crate) struct RawFanout {
    prefix: String,
    services: Vec<String>,
}

impl RawFanout {
    /// The topology under `prefix` with a queue for each of `services`.
    pub(crate) fn new(prefix: &str, services: &[&str]) -> Self {
        Self { prefix: prefix.to_owned(), services: services.iter().map(|s| (*s).to_owned()).collect() }
    }

    fn name(&self, what: &str) -> String {
        format!("{}.{what}", self.prefix)
    }

    /// Where events are published (as `lepus.events.in`).
    pub(crate) fn inbound(&self) -> String {
        self.name("in")
    }

    /// The service queues, in the order of the services.
    pub(crate) fn service_queues(&self) -> Vec<String> {
        self.services.iter().map(|s| self.name(s)).collect()
    }

    /// Declares it all, as `declare_events` and a service's declaration do.
    pub(crate) async fn declare(&self, admin: &Admin) -> anyhow::Result<()> {
        let channel = admin.channel().await?;
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        let exchange = |name: String, kind: ExchangeKind, args: FieldTable| {
            let channel = channel.clone();
            async move {
                let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
                channel
                    .exchange_declare(name.as_str().into(), kind, options, args)
                    .await
                    .with_context(|| format!("cannot declare exchange {name}"))
            }
        };
        let text = |v: &str| AMQPValue::LongString(LongString::from(v));
        let bind = QueueBindOptions::default();

        let (unrouted, inbound, events, log) =
            (self.name("unrouted"), self.inbound(), self.name("events"), self.name("log"));
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), text("quorum"));
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(UNROUTED_KEPT));
        args.insert("x-overflow".into(), text("drop-head"));
        channel.queue_declare(unrouted.as_str().into(), durable, args).await?;
        exchange(unrouted.clone(), ExchangeKind::Fanout, FieldTable::default()).await?;
        channel
            .queue_bind(unrouted.as_str().into(), unrouted.as_str().into(), "".into(), bind, FieldTable::default())
            .await?;

        let mut args = FieldTable::default();
        args.insert("alternate-exchange".into(), text(&unrouted));
        exchange(events.clone(), ExchangeKind::Topic, args).await?;
        exchange(inbound.clone(), ExchangeKind::Fanout, FieldTable::default()).await?;

        let retention = EventLog::default();
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), text("stream"));
        args.insert("x-max-age".into(), text(&format!("{}s", retention.max_age.as_secs())));
        let max_bytes = i64::try_from(retention.max_bytes).unwrap_or(i64::MAX);
        args.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(max_bytes));
        args.insert("x-stream-max-segment-size-bytes".into(), AMQPValue::LongLongInt(SEGMENT_BYTES));
        channel.queue_declare(log.as_str().into(), durable, args).await.context("cannot declare the raw stream")?;
        channel
            .queue_bind(log.as_str().into(), inbound.as_str().into(), "".into(), bind, FieldTable::default())
            .await?;
        let options = ExchangeBindOptions::default();
        channel
            .exchange_bind(events.as_str().into(), inbound.as_str().into(), "".into(), options, FieldTable::default())
            .await?;

        for queue in self.service_queues() {
            WorkQueue::new(&queue)?.declare(&channel).await.with_context(|| format!("cannot declare {queue}"))?;
            let key = Happened::NAME;
            channel
                .queue_bind(queue.as_str().into(), events.as_str().into(), key.into(), bind, FieldTable::default())
                .await?;
        }
        drop(channel.close(200, "declared".into()).await);
        Ok(())
    }

    /// Deletes every queue and exchange it declared; reports (but does not fail on) what it
    /// cannot.
    pub(crate) async fn delete(&self, admin: &Admin) {
        let mut queues = vec![self.name("log"), self.name("unrouted")];
        for queue in self.service_queues() {
            queues.push(lepus::internal::topology::dead_letter_queue(&queue));
            queues.push(queue);
        }
        admin.delete(&queues).await;
        admin.delete_exchanges(&[self.inbound(), self.name("events"), self.name("unrouted")]).await;
    }
}

/// Publishes `n` events to `exchange` with plain lapin, each in a task of its own, up to `window`
/// awaiting their confirm; counts each confirm in `confirmed`. One untimed event goes first, as
/// on the Lepus side. Returns the time from just before the first timed publish to the last
/// confirm.
pub(crate) async fn publish(
    url: &str,
    exchange: &str,
    n: u64,
    window: usize,
    confirmed: &Arc<AtomicU64>,
) -> anyhow::Result<Duration> {
    let properties = ConnectionProperties::default().with_connection_name("lepus-bench raw publisher".into());
    let connection = Connection::connect(url, properties).await.context("connect")?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let template = lepus::Publish::new(Happened { seq: 0, total_cents: 1999 }).into_envelope(chrono::Utc::now())?;
    let (body, properties): (Vec<u8>, BasicProperties) = Envelope::encode(&template)?;
    let body: Arc<[u8]> = body.into();
    let exchange: Arc<str> = exchange.into();
    let options = BasicPublishOptions { mandatory: true, immediate: false };
    let first =
        channel.basic_publish(exchange.as_ref().into(), Happened::NAME.into(), options, &body, properties.clone());
    match first.await?.await? {
        Confirmation::Ack(None) => {}
        other => bail!("the first event was not accepted by the broker: {other:?}"),
    }
    let window = Arc::new(Semaphore::new(window));
    let mut sending = JoinSet::new();
    let start = Instant::now();
    for _ in 0..n {
        let permit = Arc::clone(&window).acquire_owned().await?;
        let (channel, body, properties, exchange) =
            (channel.clone(), Arc::clone(&body), properties.clone(), Arc::clone(&exchange));
        let confirmed = Arc::clone(confirmed);
        sending.spawn(async move {
            let confirm = channel
                .basic_publish(exchange.as_ref().into(), Happened::NAME.into(), options, &body, properties)
                .await?;
            let confirmation = confirm.await?;
            drop(permit);
            match confirmation {
                Confirmation::Ack(None) => {
                    confirmed.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                other => bail!("event not accepted by the broker: {other:?}"),
            }
        });
        while let Some(done) = sending.try_join_next() {
            done??;
        }
    }
    while let Some(done) = sending.join_next().await {
        done??;
    }
    let elapsed = start.elapsed();
    drop(connection.close(200, "sent".into()).await);
    Ok(elapsed)
}
