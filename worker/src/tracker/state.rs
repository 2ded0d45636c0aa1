//! The active tracker's batches: the live ones in memory, authoritative, mirrored in the state
//! queue `lepus.batch.state`, which this module loads when the tracker becomes active and compacts
//! when it has grown.
//!
//! Every snapshot the tracker makes goes, in the transaction that accounts for it, to the state
//! queue, and to the progress stream if the batch has just opened or completed, or its last
//! snapshot there is [`STREAM_EVERY`] old; otherwise it goes to the stream with the first
//! transaction after that (a flush): progress of an unfinished batch lags by a second at most,
//! and a burst of records does not write a snapshot per chunk to the stream that readers must
//! read through. So the state queue holds, per batch, its latest snapshot and
//! older ones; loading keeps the highest `seq` of each. Compacting takes every message of the
//! queue, acks them and stores the latest snapshot of each unfinished batch again, all in one
//! transaction: a crash midway leaves the queue as it was. A completed batch is not stored again:
//! its final snapshot is already in the stream (same transaction), which is all that is read of
//! it from then on.

use futures_lite::StreamExt;
use lepus::BatchId;
use lepus::internal::{Outgoing, Snapshot, Transaction, persistent_json, topology};
use lepus::lapin::message::Delivery;
use lepus::lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicQosOptions,
};
use lepus::lapin::types::FieldTable;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// Compact once the state queue holds more than this many messages, or twice the live batches.
const COMPACT_PAST: usize = 1000;

/// How often, at most, an unfinished batch's snapshot is appended to the progress stream.
const STREAM_EVERY: Duration = Duration::from_secs(1);

/// The live batches of the active tracker.
pub(super) struct State {
    /// Batches not yet complete (among them finished ones whose callback waits for its queue).
    pub(super) live: HashMap<BatchId, Snapshot>,
    /// Messages in the state queue, as far as this tracker knows (it alone writes there).
    stored: usize,
    /// When each live batch's snapshot was last appended to the stream.
    streamed: HashMap<BatchId, Instant>,
    /// Snapshots stored but not yet appended to the stream (their batch's last append is recent).
    unstreamed: HashMap<BatchId, Snapshot>,
}

impl State {
    /// Loads the state queue (the highest `seq` per batch) and compacts it in one transaction,
    /// appending the latest snapshot of every batch to the progress stream again on the way: were
    /// a commit ever split by a broker crash, the stream gets what the state queue has.
    pub(super) async fn load(tx: &Transaction) -> lepus::Result<Self> {
        let taken = take_all(tx).await?;
        let mut latest: HashMap<BatchId, Snapshot> = HashMap::new();
        for delivery in &taken {
            match serde_json::from_slice::<Snapshot>(&delivery.data) {
                Ok(snapshot) => {
                    if latest.get(&snapshot.batch).is_none_or(|known| snapshot.seq > known.seq) {
                        latest.insert(snapshot.batch.clone(), snapshot);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "undecodable batch snapshot in the state queue; dropped"),
            }
        }
        ack_each(&taken).await?;
        let mut state = Self { live: HashMap::new(), stored: 0, streamed: HashMap::new(), unstreamed: HashMap::new() };
        let now = Instant::now();
        for snapshot in latest.into_values() {
            append(tx, &snapshot).await?;
            if !snapshot.complete {
                store(tx, &snapshot).await?;
                state.stored += 1;
                state.streamed.insert(snapshot.batch.clone(), now);
                state.live.insert(snapshot.batch.clone(), snapshot);
            }
        }
        commit(tx).await?;
        tracing::info!(read = taken.len(), live = state.live.len(), "batch tracker active: state loaded and compacted");
        Ok(state)
    }

    /// Adds `snapshot` to the transaction: stored in the state queue, and appended to the
    /// progress stream now or at a flush (see the module docs).
    pub(super) async fn write(&mut self, tx: &Transaction, snapshot: &Snapshot) -> lepus::Result<()> {
        store(tx, snapshot).await?;
        self.stored += 1;
        let batch = &snapshot.batch;
        let now = Instant::now();
        if snapshot.complete {
            self.streamed.remove(batch);
            self.unstreamed.remove(batch);
            append(tx, snapshot).await?;
        } else if self.streamed.get(batch).is_none_or(|at| now >= *at + STREAM_EVERY) {
            self.streamed.insert(batch.clone(), now);
            self.unstreamed.remove(batch);
            append(tx, snapshot).await?;
        } else {
            self.unstreamed.insert(batch.clone(), snapshot.clone());
        }
        Ok(())
    }

    /// When the next held-back snapshot is due in the stream, if any is held back.
    pub(super) fn next_flush(&self) -> Option<Instant> {
        self.unstreamed.keys().filter_map(|batch| self.streamed.get(batch)).min().map(|at| *at + STREAM_EVERY)
    }

    /// Adds to the transaction the held-back snapshots that are due in the stream.
    pub(super) async fn flush(&mut self, tx: &Transaction) -> lepus::Result<()> {
        let now = Instant::now();
        let due: Vec<BatchId> = self
            .unstreamed
            .keys()
            .filter(|batch| self.streamed.get(*batch).is_none_or(|at| now >= *at + STREAM_EVERY))
            .cloned()
            .collect();
        for batch in due {
            if let Some(snapshot) = self.unstreamed.remove(&batch) {
                append(tx, &snapshot).await?;
                self.streamed.insert(batch, now);
            }
        }
        Ok(())
    }

    /// Whether the state queue has grown enough to compact it.
    pub(super) fn needs_compaction(&self) -> bool {
        self.stored > COMPACT_PAST.max(2 * self.live.len())
    }

    /// Replaces everything in the state queue by the latest snapshot of each live batch, in one
    /// transaction (commits what the transaction held before too).
    pub(super) async fn compact(&mut self, tx: &Transaction) -> lepus::Result<()> {
        let taken = take_all(tx).await?;
        ack_each(&taken).await?;
        for snapshot in self.live.values() {
            store(tx, snapshot).await?;
        }
        commit(tx).await?;
        tracing::debug!(read = taken.len(), live = self.live.len(), "batch state compacted");
        self.stored = self.live.len();
        Ok(())
    }
}

/// Commits; returns the routing keys the broker could not route (callbacks whose queue was
/// deleted meanwhile). The batch queues themselves missing is an error: the tracker starts
/// again, declaring them.
pub(super) async fn commit(tx: &Transaction) -> lepus::Result<Vec<String>> {
    let unroutable = tx.commit().await?;
    if let Some(queue) =
        unroutable.iter().find(|q| [topology::BATCH_STATE_QUEUE, topology::BATCH_PROGRESS_STREAM].contains(&q.as_str()))
    {
        return Err(lepus::Error::Unroutable {
            exchange: String::new(),
            routing_key: queue.clone(),
            reason: "the batch queue was deleted while the tracker ran".to_owned(),
        });
    }
    Ok(unroutable)
}

/// Every message of the state queue, taken unacked on the transaction's channel: as many as the
/// queue says it holds (up to 65535, the largest prefetch) through a consumer whose prefetch
/// takes them all (one `basic.get` each would take seconds for thousands), then by `basic.get`
/// whatever that left, to be sure the queue is empty.
async fn take_all(tx: &Transaction) -> lepus::Result<Vec<Delivery>> {
    let channel = tx.channel();
    let amqp = |operation| move |source| lepus::Error::Amqp { operation, source };
    let ready = topology::inspect_queue_on(channel, topology::BATCH_STATE_QUEUE).await?.map_or(0, |q| q.messages);
    let prefetch = u16::try_from(ready).unwrap_or(u16::MAX);
    let mut taken = Vec::with_capacity(ready as usize);
    if prefetch > 0 {
        // Applies to consumers made from now on. Acks on a transactional channel free nothing
        // until the commit, so the prefetch must cover every message; 0 would not (a quorum queue
        // makes "unlimited" 2000).
        channel.basic_qos(prefetch, BasicQosOptions { global: false }).await.map_err(amqp("basic.qos"))?;
        let mut consumer = channel
            .basic_consume(
                topology::BATCH_STATE_QUEUE.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp("basic.consume"))?;
        while taken.len() < usize::from(prefetch) {
            let next = tokio::time::timeout(tx.timeout(), consumer.next())
                .await
                .map_err(|_| lepus::Error::Timeout { what: "the batch state queue's messages", after: tx.timeout() })?;
            match next {
                Some(delivery) => taken.push(delivery.map_err(amqp("consume the batch state"))?),
                None => break,
            }
        }
        channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await.map_err(amqp("basic.cancel"))?;
        // Deliveries already on their way when the consumer was cancelled come before its end.
        let drained = tokio::time::timeout(tx.timeout(), async {
            while let Some(delivery) = consumer.next().await {
                taken.push(delivery.map_err(amqp("consume the batch state"))?);
            }
            Ok::<_, lepus::Error>(())
        });
        drained.await.map_err(|_| lepus::Error::Timeout {
            what: "the end of the batch state consumer",
            after: tx.timeout(),
        })??;
    }
    while let Some(message) = channel
        .basic_get(topology::BATCH_STATE_QUEUE.into(), BasicGetOptions { no_ack: false })
        .await
        .map_err(amqp("basic.get"))?
    {
        taken.push(message.delivery);
    }
    Ok(taken)
}

async fn append(tx: &Transaction, snapshot: &Snapshot) -> lepus::Result<()> {
    let body = snapshot.encode()?;
    let routing_key = topology::BATCH_PROGRESS_STREAM;
    tx.publish(Outgoing { exchange: "", routing_key, body: &body, properties: persistent_json() }).await
}

async fn store(tx: &Transaction, snapshot: &Snapshot) -> lepus::Result<()> {
    let body = snapshot.encode()?;
    let routing_key = topology::BATCH_STATE_QUEUE;
    tx.publish(Outgoing { exchange: "", routing_key, body: &body, properties: persistent_json() }).await
}

/// Acks each of `deliveries`, one by one: records delivered meanwhile on the same channel, lower
/// in delivery tag, must not be acked with them.
async fn ack_each(deliveries: &[Delivery]) -> lepus::Result<()> {
    for delivery in deliveries {
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(|source| lepus::Error::Amqp { operation: "ack", source })?;
    }
    Ok(())
}

/// Acks `delivery` and every one before it on the channel: the tracker's chunk of records, all
/// handled (the state queue's messages are acked one by one, and committed, before a chunk).
pub(super) async fn ack_up_to(delivery: &Delivery) -> lepus::Result<()> {
    delivery
        .acker
        .ack(BasicAckOptions { multiple: true })
        .await
        .map(drop)
        .map_err(|source| lepus::Error::Amqp { operation: "ack", source })
}
