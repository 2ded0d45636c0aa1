//! The batch tracker: every worker runs one, and the broker lets one at a time consume
//! `lepus.batches` (single active consumer). It applies batch records to their batch's snapshot
//! and, in one transaction, consumes the records, replaces the snapshot and, when the last job
//! is in, enqueues the batch's callback. See `lepus::batch` for the whole protocol.
//!
//! A callback whose queue does not exist is not sent: the batch stays finished but not complete,
//! the error is logged and counted, and the tracker tries again 1 s later, then with the wait
//! doubling up to a minute. Meanwhile it keeps one of the batch's records unacked: should this
//! tracker stop, the broker hands that record to the next one, which tries again.

use crate::stats::WorkerStats;
use futures_lite::{StreamExt, future};
use lepus::BatchId;
use lepus::Broker;
use lepus::internal::{
    Completion, Outgoing, Record, Snapshot, Transaction, held_retry_delay, persistent_json, topology,
};
use lepus::lapin::Consumer;
use lepus::lapin::message::Delivery;
use lepus::lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicQosOptions};
use lepus::lapin::types::FieldTable;
use metrics::Counter;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Records handled in one transaction, at most.
const CHUNK: usize = 500;

/// Tracks batches until `stop`, starting again (by the reconnect policy) after failures.
pub(crate) async fn run(
    broker: Broker,
    timeout: Duration,
    stats: Arc<WorkerStats>,
    completed: Counter,
    stop: CancellationToken,
) {
    let start = || Tracker::start(&broker, timeout, Arc::clone(&stats), completed.clone());
    while let Some(mut tracker) = lepus::internal::reconnect("batch tracker", &stop, start).await {
        match tracker.track(&stop).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "batch tracker stopped; starting again"),
        }
    }
}

/// Why a tracker stopped.
#[derive(Debug, thiserror::Error)]
enum Stopped {
    #[error(transparent)]
    Broker(#[from] lepus::Error),
    #[error("the broker cancelled the consumer of lepus.batches")]
    ConsumerEnded,
}

struct Tracker {
    broker: Broker,
    tx: Transaction,
    consumer: Consumer,
    stats: Arc<WorkerStats>,
    /// `lepus_batches_completed_total`.
    completed: Counter,
    /// Snapshots of open batches, authoritative while this tracker is the active consumer.
    open: HashMap<BatchId, Snapshot>,
    /// Finished batches whose callback waits for its queue.
    held: HashMap<BatchId, Held>,
}

/// A finished batch whose callback's queue does not exist yet.
struct Held {
    /// One of its records, kept unacked so that the next tracker retries should this one stop.
    token: Delivery,
    retry_at: Instant,
    /// How often its callback's queue was found missing.
    refusals: u32,
}

/// What became of one batch in a chunk of records.
enum Applied {
    /// The snapshot was replaced (and the callback enqueued if it just completed).
    Updated { completed: bool },
    /// Every job has finished, but the callback's queue does not exist: nothing was sent.
    CallbackHeld { queue: String },
    /// A reader holds the snapshot right now: try these records again shortly.
    Busy,
    /// The batch has no progress queue (never created, or expired): records dropped.
    Unknown,
}

impl Tracker {
    async fn start(
        broker: &Broker,
        timeout: Duration,
        stats: Arc<WorkerStats>,
        completed: Counter,
    ) -> Result<Self, Stopped> {
        let channel = broker.channel().await?;
        topology::declare_batch_records(&channel).await?;
        channel.basic_qos(CHUNK as u16, BasicQosOptions { global: false }).await.map_err(amqp("basic.qos"))?;
        let tx = Transaction::open(channel, timeout).await?;
        let consumer = tx
            .channel()
            .basic_consume(
                topology::BATCH_RECORDS_QUEUE.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp("basic.consume"))?;
        Ok(Self { broker: broker.clone(), tx, consumer, stats, completed, open: HashMap::new(), held: HashMap::new() })
    }

    async fn track(&mut self, stop: &CancellationToken) -> Result<(), Stopped> {
        loop {
            let retry_at = self.held.values().map(|held| held.retry_at).min();
            let first = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = sleep_until(retry_at) => {
                    self.retry_held().await?;
                    continue;
                }
                next = self.consumer.next() => next,
            };
            let mut chunk = vec![delivery(first)?];
            while chunk.len() < CHUNK {
                match future::poll_once(self.consumer.next()).await {
                    Some(next) => chunk.push(delivery(next)?),
                    None => break,
                }
            }
            self.handle(chunk).await?;
        }
    }

    /// Applies a chunk of records batch by batch, in one transaction.
    async fn handle(&mut self, chunk: Vec<Delivery>) -> Result<(), Stopped> {
        let mut by_batch: HashMap<BatchId, Vec<(Record, Delivery)>> = HashMap::new();
        let mut retry_later = Vec::new();
        for delivery in chunk {
            match serde_json::from_slice::<Record>(&delivery.data) {
                Ok(record) => by_batch.entry(record.batch.clone()).or_default().push((record, delivery)),
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable batch record; dropped");
                    ack(&delivery).await?;
                }
            }
        }
        let mut completed = Vec::new();
        for (batch, records) in by_batch {
            let (applied_records, mut deliveries): (Vec<Record>, Vec<Delivery>) = records.into_iter().unzip();
            match self.apply(&batch, &applied_records).await? {
                Applied::Busy => retry_later.extend(deliveries),
                Applied::CallbackHeld { queue } => {
                    // Keep one record as the retry token (unless the batch has one already).
                    if !self.held.contains_key(&batch)
                        && let Some(token) = deliveries.pop()
                    {
                        self.hold(batch.clone(), token, &queue, 1);
                    }
                    for delivery in &deliveries {
                        ack(delivery).await?;
                    }
                }
                applied => {
                    if matches!(applied, Applied::Unknown) {
                        tracing::warn!(%batch, records = deliveries.len(), "records for a batch without progress queue; dropped");
                    }
                    if matches!(applied, Applied::Updated { completed: true }) {
                        completed.push(batch);
                    }
                    for delivery in &deliveries {
                        ack(delivery).await?;
                    }
                }
            }
        }
        self.commit(&completed).await?;
        if !retry_later.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            for delivery in retry_later {
                delivery.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await.map_err(amqp("nack"))?;
            }
            // On a transactional channel a nack takes effect at the commit: without this one the
            // records would wait for the next chunk, which may never come (they were the last).
            self.tx.commit().await?;
        }
        Ok(())
    }

    /// Tries again the callbacks whose time has come.
    async fn retry_held(&mut self) -> Result<(), Stopped> {
        let now = Instant::now();
        let due: Vec<BatchId> =
            self.held.iter().filter(|(_, held)| held.retry_at <= now).map(|(id, _)| id.clone()).collect();
        let mut completed = Vec::new();
        for batch in due {
            match self.apply(&batch, &[]).await? {
                Applied::CallbackHeld { queue } => {
                    if let Some(held) = self.held.remove(&batch) {
                        self.hold(batch, held.token, &queue, held.refusals + 1);
                    }
                }
                Applied::Busy => {
                    if let Some(held) = self.held.get_mut(&batch) {
                        held.retry_at = Instant::now() + Duration::from_millis(50);
                    }
                }
                applied => {
                    if let Some(held) = self.held.remove(&batch) {
                        ack(&held.token).await?;
                    }
                    if matches!(applied, Applied::Updated { completed: true }) {
                        completed.push(batch);
                    }
                }
            }
        }
        self.commit(&completed).await
    }

    /// Remembers a finished batch whose callback's queue is missing; says so at error level.
    fn hold(&mut self, batch: BatchId, token: Delivery, queue: &str, refusals: u32) {
        let delay = held_retry_delay(refusals);
        let held_total = self.stats.count_held_callback();
        tracing::error!(
            %batch,
            queue,
            retry_in = ?delay,
            held_total,
            "batch finished, but its callback's queue does not exist; the callback is kept and tried again (start a worker on the queue)"
        );
        self.held.insert(batch, Held { token, retry_at: Instant::now() + delay, refusals });
    }

    /// Commits the transaction; logs the batches it completed.
    async fn commit(&self, completed: &[BatchId]) -> Result<(), Stopped> {
        let unroutable = self.tx.commit().await?;
        for queue in unroutable {
            let dropped_total = self.stats.count_dropped_callback();
            tracing::error!(
                queue,
                dropped_total,
                "a batch callback was dropped by the broker: its queue was deleted between the check and the commit"
            );
        }
        for batch in completed {
            self.completed.increment(1);
            tracing::info!(%batch, "batch complete");
        }
        Ok(())
    }

    /// Replaces `batch`'s snapshot with one that includes `records` (publishing the callback if
    /// the batch just completed and its queue exists). Runs inside the caller's transaction.
    async fn apply(&mut self, batch: &BatchId, records: &[Record]) -> Result<Applied, Stopped> {
        let queue = topology::batch_progress_queue(batch);
        if !self.open.contains_key(batch) && topology::inspect_queue(&self.broker, &queue).await?.is_none() {
            return Ok(Applied::Unknown);
        }
        // Take the stored snapshots out (they are removed when the transaction commits).
        let mut stored: Vec<Delivery> = Vec::new();
        let channel = self.tx.channel();
        while let Some(message) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(amqp("basic.get"))?
        {
            stored.push(message.delivery);
        }
        let loaded =
            stored.iter().filter_map(|d| serde_json::from_slice::<Snapshot>(&d.data).ok()).max_by_key(|s| s.seq);
        let Some(mut snapshot) = self.open.remove(batch).or(loaded) else { return Ok(Applied::Busy) };
        let mut completed = false;
        if let Completion::Due { callback } = snapshot.apply_all(records) {
            if let Some(callback) = callback {
                let (callback_queue, message) = *callback;
                if topology::inspect_queue(&self.broker, &callback_queue).await?.is_none() {
                    self.store(batch, snapshot, &stored).await?;
                    return Ok(Applied::CallbackHeld { queue: callback_queue });
                }
                let (body, properties) = message.encode().map_err(|source| lepus::Error::Serde {
                    action: "encode",
                    what: "a batch callback".into(),
                    source,
                })?;
                self.tx
                    .publish(Outgoing { exchange: "", routing_key: &callback_queue, body: &body, properties })
                    .await?;
            }
            snapshot.complete = true;
            completed = true;
        }
        self.store(batch, snapshot, &stored).await?;
        Ok(Applied::Updated { completed })
    }

    /// Publishes `snapshot` as the batch's next one and acks the stored ones it replaces; keeps it
    /// in memory while the batch is open.
    async fn store(&mut self, batch: &BatchId, mut snapshot: Snapshot, stored: &[Delivery]) -> Result<(), Stopped> {
        snapshot.seq += 1;
        let body = snapshot.encode()?;
        let queue = topology::batch_progress_queue(batch);
        self.tx
            .publish(Outgoing { exchange: "", routing_key: &queue, body: &body, properties: persistent_json() })
            .await?;
        for old in stored {
            ack(old).await?;
        }
        if !snapshot.complete {
            self.open.insert(batch.clone(), snapshot);
        }
        Ok(())
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn delivery(next: Option<lepus::lapin::Result<Delivery>>) -> Result<Delivery, Stopped> {
    match next {
        Some(Ok(delivery)) => Ok(delivery),
        Some(Err(e)) => Err(amqp("consume")(e).into()),
        None => Err(Stopped::ConsumerEnded),
    }
}

async fn ack(delivery: &Delivery) -> Result<(), Stopped> {
    delivery.acker.ack(BasicAckOptions::default()).await.map(drop).map_err(|e| amqp("ack")(e).into())
}

fn amqp(operation: &'static str) -> impl FnOnce(lepus::lapin::Error) -> lepus::Error {
    move |source| lepus::Error::Amqp { operation, source }
}
