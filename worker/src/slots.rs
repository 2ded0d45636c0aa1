//! Concurrency keys: a job whose message carries a key and a limit (see `lepus::Concurrency`)
//! runs only while its worker holds one of the key's slots, a message of the key's slot queue
//! (`lepus.slots.<key>.<limit>`, see `lepus::internal::topology`).
//!
//! - **Taking a slot**: on a channel of its own (one the worker keeps for slots, see
//!   [`SlotChannels`]), a `basic.get`: a ready slot, held unacked. If none is ready, the job
//!   consumes the slot queue with prefetch 1 and waits for a delivery. Waiting jobs are the
//!   queue's consumers, so the broker hands a returned slot to the next of them at once, in turn
//!   (before it is ready for anyone's `basic.get`).
//! - **Giving it back**, when the job ends: a slot that was got is rejected with requeue and its
//!   channel kept for the next slot; a slot that was consumed has its channel closed (its
//!   consumer would otherwise be handed the slot again). Either way the broker requeues it, and it
//!   does the same when the worker dies or loses its connection.
//! - **Creating a key's slots**: a consume that finds no queue takes the creation lock (an
//!   exclusive queue), declares the marker, the queue, puts `limit` slots in it in one
//!   transaction, deletes the marker and releases the lock. A creator that finds the marker
//!   under the lock knows the previous one died half-way: it deletes the queue (it holds no
//!   slot: the transaction put in all or none) and creates it again.
//! - **Waiting is bounded**: a job that gets no slot within the worker's `slot_wait` (10 s by default) goes back to the end
//!   of its work queue (published, confirmed, then acked), so jobs of other keys behind it in
//!   the queue are reached, and no delivery is held near RabbitMQ's consumer timeout. A waiting
//!   job keeps its concurrency permit and its prefetch place: with prefetch equal to the
//!   concurrency, freeing the permit would not let another delivery in.
//! - **A slot lost while the job runs** (the channel or the connection died): the job is
//!   cancelled at its next await and sent back to its queue, since the broker may already have
//!   handed the slot to another worker.

use crate::execute::{self, Executed};
use crate::outcome::Outcome;
use futures_lite::StreamExt;
use lepus::dead_letter::Reason;
use lepus::internal::topology::{self, slot_marker_queue, slot_queue};
use lepus::internal::{Outgoing, Transaction, persistent_json};
use lepus::lapin::Acker;
use lepus::lapin::options::{BasicConsumeOptions, BasicGetOptions, BasicQosOptions, BasicRejectOptions};
use lepus::lapin::types::FieldTable;
use lepus::lapin::{BasicProperties, Channel, Consumer};
use lepus::protocol::{ExceptionInfo, ResultMessage, TaskMessage};
use lepus::{Broker, Concurrency, Error, ReplyCode};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// How long a job whose slot could not be asked for (a broker error) waits in the delay cascade.
const SLOT_ERROR_DELAY: Duration = Duration::from_secs(5);

/// How many times a job tries to consume its slot queue, creating it in between.
const ATTEMPTS: usize = 5;

/// How many idle slot channels a worker keeps.
const IDLE_CHANNELS: usize = 256;

/// How often a slot that was got (it has no consumer to tell) checks that its channel lives.
const CHANNEL_CHECK: Duration = Duration::from_millis(200);

/// The worker's idle slot channels (prefetch 1 set): a slot given back by a reject leaves its
/// channel here for the next, so a keyed job costs a `basic.get` and a reject, not a channel.
#[derive(Debug, Default)]
pub(crate) struct SlotChannels {
    idle: std::sync::Mutex<Vec<Channel>>,
}

impl SlotChannels {
    /// An idle channel that is still open, or a new one.
    async fn open(&self, broker: &Broker) -> lepus::Result<Channel> {
        loop {
            let idle = self.idle.lock().map(|mut idle| idle.pop()).unwrap_or_default();
            match idle {
                Some(channel) if channel.status().connected() => return Ok(channel),
                Some(_) => {}
                None => break,
            }
        }
        let channel = broker.channel().await?;
        channel.basic_qos(1, BasicQosOptions { global: false }).await.map_err(amqp("basic.qos"))?;
        Ok(channel)
    }

    /// Keeps `channel` for the next slot.
    fn keep(&self, channel: Channel) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < IDLE_CHANNELS
        {
            idle.push(channel);
        }
    }
}

/// One slot, held unacked on `channel`; `consumer` is the consumer it came from, if it was
/// waited for.
#[derive(Debug)]
pub(crate) struct Slot {
    channel: Channel,
    acker: Acker,
    consumer: Option<Consumer>,
    channels: Arc<SlotChannels>,
}

impl Slot {
    /// Resolves when the slot is lost: its channel or connection died (or, for a consumed slot,
    /// its queue was deleted).
    async fn lost(&mut self) {
        match &mut self.consumer {
            Some(consumer) => while let Some(Ok(_)) = consumer.next().await {},
            None => {
                while self.channel.status().connected() {
                    tokio::time::sleep(CHANNEL_CHECK).await;
                }
            }
        }
    }
}

impl Drop for Slot {
    /// Gives the slot back: rejected with requeue (its channel kept), or, for a consumed one,
    /// its channel closed, which requeues it.
    fn drop(&mut self) {
        let channel = self.channel.clone();
        if !channel.status().connected() {
            return; // The broker has requeued it.
        }
        if self.consumer.is_some() {
            tokio::spawn(async move { drop(channel.close(200, "slot given back".into()).await) });
        } else {
            let (acker, channels) = (self.acker.clone(), Arc::clone(&self.channels));
            tokio::spawn(async move {
                if let Ok(true) = acker.reject(BasicRejectOptions { requeue: true }).await {
                    channels.keep(channel);
                } else {
                    drop(channel.close(200, "slot given back".into()).await);
                }
            });
        }
    }
}

/// The slot a job needs before it runs: `Ok(None)` when its message has no concurrency key,
/// `Ok(Some(slot))` once one is held, else what becomes of the job instead (dead-lettered for a
/// malformed header, with a `FAILURE` for its caller; back to its queue when no slot came in
/// time).
pub(crate) async fn take_for(
    message: &TaskMessage,
    queue: &str,
    headers: Option<&FieldTable>,
    broker: &Broker,
    channels: &Arc<SlotChannels>,
    wait: Duration,
    stop: &CancellationToken,
) -> Result<Option<Slot>, Box<Outcome>> {
    let retries = message.retries;
    let concurrency = match Concurrency::from_headers(headers) {
        Ok(None) => return Ok(None),
        Ok(Some(concurrency)) => concurrency,
        Err(error) => {
            let exception = ExceptionInfo::python("builtins", "ValueError", error.clone());
            let (reply, then) = execute::ended(message, queue, ResultMessage::failure(&message.id, &exception, None));
            return Err(Box::new(Outcome::DeadLetter { reason: Reason::Undecodable, error, attempts: 0, reply, then }));
        }
    };
    let back = |delay| Box::new(Outcome::deferred(retries, delay));
    match take(broker, channels, &concurrency, wait, stop).await {
        Ok(Some(slot)) => Ok(Some(slot)),
        Ok(None) => {
            tracing::debug!(key = concurrency.key, limit = concurrency.limit, "no slot in time; back to the queue");
            Err(back(Duration::ZERO))
        }
        Err(e) => {
            tracing::error!(key = concurrency.key, error = %e, "cannot take a slot; the job waits in the delay cascade");
            Err(back(SLOT_ERROR_DELAY))
        }
    }
}

/// Runs `run` while holding `slot` (if any): if the slot is lost meanwhile, `terminate` is
/// cancelled and the job goes back to its queue instead of ending as it did.
pub(crate) async fn holding(
    slot: Option<&mut Slot>,
    retries: u32,
    terminate: &CancellationToken,
    run: impl Future<Output = Executed>,
) -> Executed {
    let Some(slot) = slot else { return run.await };
    let mut run = std::pin::pin!(run);
    tokio::select! {
        executed = &mut run => executed,
        () = slot.lost() => {
            tracing::warn!("the job's concurrency slot was lost (connection or channel closed); job cancelled and sent back");
            terminate.cancel();
            let executed = run.await;
            let outcome = Outcome::deferred(retries, Duration::ZERO);
            Executed { outcome, ..executed }
        }
    }
}

/// Takes a slot of `concurrency`, creating its queue if need be: `None` if none came within
/// `wait` (or the worker is stopping).
pub(crate) async fn take(
    broker: &Broker,
    channels: &Arc<SlotChannels>,
    concurrency: &Concurrency,
    wait: Duration,
    stop: &CancellationToken,
) -> lepus::Result<Option<Slot>> {
    let queue = slot_queue(concurrency);
    for _ in 0..ATTEMPTS {
        let channel = channels.open(broker).await?;
        let got = channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false }).await;
        match got {
            Ok(Some(got)) => {
                let (acker, channels) = (got.delivery.acker, Arc::clone(channels));
                return Ok(Some(Slot { channel, acker, consumer: None, channels }));
            }
            Ok(None) => {}
            Err(e) if ReplyCode::of(&e) == Some(ReplyCode::NotFound) => {
                create(broker, concurrency).await?;
                continue;
            }
            Err(e) => return Err(amqp("basic.get")(e)),
        }
        // None is ready: wait for one as a consumer.
        let consumed = channel
            .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await;
        let mut consumer = match consumed {
            Ok(consumer) => consumer,
            Err(e) if ReplyCode::of(&e) == Some(ReplyCode::NotFound) => {
                create(broker, concurrency).await?;
                continue;
            }
            Err(e) => return Err(amqp("basic.consume")(e)),
        };
        // `None`: no slot in time, or the worker is stopping.
        let next = tokio::select! {
            next = tokio::time::timeout(wait, consumer.next()) => next.ok(),
            () = stop.cancelled() => None,
        };
        return match next {
            Some(Some(Ok(slot))) => {
                let (acker, channels) = (slot.acker, Arc::clone(channels));
                Ok(Some(Slot { channel, acker, consumer: Some(consumer), channels }))
            }
            Some(Some(Err(e))) => Err(amqp("consume a slot")(e)),
            // The consumer ended: the queue was deleted (it expired, or a creator replaced it).
            Some(None) => {
                drop(channel.close(200, "slot queue gone".into()).await);
                continue;
            }
            None => {
                drop(channel.close(200, "no slot in time".into()).await);
                repair_if_interrupted(broker, concurrency).await?;
                Ok(None)
            }
        };
    }
    Ok(None)
}

/// After a wait in vain: if a creation of the slot queue was interrupted (its marker is still
/// there), creates it again.
async fn repair_if_interrupted(broker: &Broker, concurrency: &Concurrency) -> lepus::Result<()> {
    if topology::inspect_queue(broker, &slot_marker_queue(concurrency)).await?.is_some() {
        create(broker, concurrency).await?;
    }
    Ok(())
}

/// One creation at a time in this process: the broker's lock is per connection, and a worker's
/// jobs share one.
static CREATING: Mutex<()> = Mutex::const_new(());

/// Creates the slot queue of `concurrency` with its slots, unless another process is creating
/// it (then returns at once: the caller consumes again) or it exists, complete.
async fn create(broker: &Broker, concurrency: &Concurrency) -> lepus::Result<()> {
    let _one = CREATING.lock().await;
    let channel = broker.channel().await?;
    match topology::take_slot_lock(&channel, concurrency).await {
        Ok(()) => {}
        Err(e) if e.reply_code() == Some(ReplyCode::ResourceLocked) => {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    let created = fill(broker, &channel, concurrency).await;
    let released = topology::release_slot_lock(&channel, concurrency).await;
    drop(channel.close(200, "slots created".into()).await);
    created.and(released)
}

/// Under the lock: (re)creates the slot queue and its slots, unless it is there and complete.
async fn fill(broker: &Broker, channel: &Channel, concurrency: &Concurrency) -> lepus::Result<()> {
    let queue = slot_queue(concurrency);
    let exists = topology::inspect_queue(broker, &queue).await?.is_some();
    let interrupted = topology::inspect_queue(broker, &slot_marker_queue(concurrency)).await?.is_some();
    if exists && !interrupted {
        return Ok(());
    }
    topology::declare_slot_marker(channel, concurrency).await?;
    if exists {
        tracing::warn!(queue, "an earlier creation of this slot queue was interrupted; created again");
        topology::delete_slot_queue(channel, concurrency).await?;
    }
    topology::declare_slot_queue(channel, concurrency).await?;
    let transaction = Transaction::open(broker.channel().await?, Duration::from_secs(10)).await?;
    let properties: BasicProperties = persistent_json();
    for index in 0..concurrency.limit {
        let body = format!("{{\"slot\":{index}}}");
        let outgoing =
            Outgoing { exchange: "", routing_key: &queue, body: body.as_bytes(), properties: properties.clone() };
        transaction.publish(outgoing).await?;
    }
    let returned = transaction.commit().await?;
    drop(transaction.channel().close(200, "slots in".into()).await);
    if !returned.is_empty() {
        return Err(Error::Unroutable {
            exchange: String::new(),
            routing_key: queue,
            reason: "slot queue gone".into(),
        });
    }
    topology::delete_slot_marker(channel, concurrency).await?;
    tracing::info!(queue, limit = concurrency.limit, "slot queue created");
    Ok(())
}

fn amqp(operation: &'static str) -> impl FnOnce(lepus::lapin::Error) -> Error {
    move |source| Error::Amqp { operation, source }
}
