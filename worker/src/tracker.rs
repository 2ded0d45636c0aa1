//! The batch tracker: every worker runs one, and the broker lets one at a time consume
//! `lepus.batches` (single active consumer). It applies batch records to their batch's snapshot
//! and, in one transaction, consumes the records, replaces the snapshot and, when the last job
//! is in, enqueues the batch's callback. See `lepus::batch` for the whole protocol.

use futures_lite::{StreamExt, future};
use lepus::BatchId;
use lepus::Broker;
use lepus::internal::{Outgoing, Record, Snapshot, Transaction, persistent_json, topology};
use lepus::lapin::Consumer;
use lepus::lapin::message::Delivery;
use lepus::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicQosOptions, QueueDeclareOptions,
};
use lepus::lapin::types::FieldTable;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Records handled in one transaction, at most.
const CHUNK: usize = 500;

/// Tracks batches until `stop`, starting again (by [`lepus::reconnect`]) after failures.
pub(crate) async fn run(broker: Broker, timeout: Duration, stop: CancellationToken) {
    while let Some(mut tracker) =
        lepus::internal::reconnect("batch tracker", &stop, || Tracker::start(&broker, timeout)).await
    {
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
    /// Snapshots of open batches, authoritative while this tracker is the active consumer.
    open: HashMap<BatchId, Snapshot>,
}

/// What became of one batch in a chunk of records.
enum Applied {
    /// The snapshot was replaced (and the callback enqueued if it just completed).
    Updated { completed: bool },
    /// A reader holds the snapshot right now: try these records again shortly.
    Busy,
    /// The batch has no progress queue (never created, or expired): records dropped.
    Unknown,
}

impl Tracker {
    async fn start(broker: &Broker, timeout: Duration) -> Result<Self, Stopped> {
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
        Ok(Self { broker: broker.clone(), tx, consumer, open: HashMap::new() })
    }

    async fn track(&mut self, stop: &CancellationToken) -> Result<(), Stopped> {
        loop {
            let first = tokio::select! {
                () = stop.cancelled() => return Ok(()),
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
            match self.apply(&batch, &records).await? {
                Applied::Busy => retry_later.extend(records.into_iter().map(|(_, d)| d)),
                applied => {
                    if matches!(applied, Applied::Unknown) {
                        tracing::warn!(%batch, records = records.len(), "records for a batch without progress queue; dropped");
                    }
                    if matches!(applied, Applied::Updated { completed: true }) {
                        completed.push(batch);
                    }
                    for (_, delivery) in &records {
                        ack(delivery).await?;
                    }
                }
            }
        }
        let unroutable = self.tx.commit().await?;
        for key in unroutable {
            tracing::error!(queue = key, "a batch callback could not be routed (no such queue); it was dropped");
        }
        for batch in completed {
            tracing::info!(%batch, "batch complete");
        }
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

    /// Replaces `batch`'s snapshot with one that includes `records` (publishing the callback if
    /// the batch just completed). Runs inside the caller's transaction.
    async fn apply(&mut self, batch: &BatchId, records: &[(Record, Delivery)]) -> Result<Applied, Stopped> {
        let queue = topology::batch_progress_queue(batch);
        if !self.open.contains_key(batch) && !self.exists(&queue).await? {
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
        for (record, _) in records {
            snapshot.apply(record);
        }
        let mut completed = false;
        if !snapshot.complete && snapshot.all_finished() {
            if let Some(callback) = &snapshot.callback {
                let message = callback.message(&snapshot.summary());
                let (body, properties) = message.encode().map_err(|source| lepus::Error::Serde {
                    action: "encode",
                    what: "a batch callback".into(),
                    source,
                })?;
                self.tx
                    .publish(Outgoing { exchange: "", routing_key: &callback.queue, body: &body, properties })
                    .await?;
            }
            snapshot.complete = true;
            completed = true;
        }
        snapshot.seq += 1;
        let body = snapshot.encode()?;
        let properties = persistent_json();
        self.tx.publish(Outgoing { exchange: "", routing_key: &queue, body: &body, properties }).await?;
        for old in &stored {
            ack(old).await?;
        }
        if !snapshot.complete {
            self.open.insert(batch.clone(), snapshot);
        }
        Ok(Applied::Updated { completed })
    }

    /// Whether a queue exists, asked on a channel of its own (a failed passive declare closes
    /// the channel it is made on).
    async fn exists(&self, queue: &str) -> Result<bool, Stopped> {
        let channel = self.broker.channel().await?;
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let exists = channel.queue_declare(queue.into(), passive, FieldTable::default()).await.is_ok();
        drop(channel.close(200, "checked".into()).await);
        Ok(exists)
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
