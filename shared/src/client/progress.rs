//! Reading a batch's progress from the progress stream, and the batches a client sent (so that it
//! reads theirs from when they were sent, and knows them before a tracker has).
//!
//! A stream read over AMQP 0-9-1 never says "that was the last message": a consumer simply waits
//! for more. So the reader first appends an end marker of its own to the stream (confirmed: it is
//! stored after every snapshot appended before), then consumes from a start offset until it meets
//! that marker. Everything before the marker has been seen; no idle timeout decides the end (the
//! broker timeout only guards against a stalled broker).
//!
//! Where to start: snapshots of one batch only grow in `seq` as time goes on, so the first window
//! (counted back from now) that holds any snapshot of the batch holds its latest. A client that
//! sent the batch, or was told when it was sent, starts from a little before then; otherwise it
//! reads the last 2 minutes,
//! then the last 30 minutes, 6 hours, 2 days, then the whole stream, stopping at the first window
//! that has the batch. Each wider window is read only up to where the one before began (by the
//! `x-stream-offset` the broker puts on each delivery), so the stream is read once at most.

use crate::batch::Snapshot;
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::ids::BatchId;
use crate::protocol::headers::persistent_json;
use crate::publisher::{Outgoing, Publisher};
use crate::topology::BATCH_PROGRESS_STREAM;
use chrono::{DateTime, Utc};
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// Deliveries a stream reader has in flight (streams need a prefetch), acked in halves.
const PREFETCH: u16 = 2000;

/// How far before the send time a sender's read starts: clocks of client and broker differ, and
/// the broker finds a timestamp offset by whole chunks.
const CLOCK_SLACK: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// The windows of a read for a batch this client did not send, counted back from now.
const WINDOWS: [chrono::TimeDelta; 4] = [
    chrono::TimeDelta::minutes(2),
    chrono::TimeDelta::minutes(30),
    chrono::TimeDelta::hours(6),
    chrono::TimeDelta::days(2),
];

/// Batches a client sent, newest last, at most [`SentBatches::CAPACITY`]: when, and their first
/// snapshot (their progress until a tracker has taken the opening).
#[derive(Debug, Default)]
pub(crate) struct SentBatches {
    by_id: HashMap<BatchId, (DateTime<Utc>, Snapshot)>,
    order: VecDeque<BatchId>,
}

impl SentBatches {
    const CAPACITY: usize = 100_000;

    pub(crate) fn remember(&mut self, snapshot: Snapshot, at: DateTime<Utc>) {
        let id = snapshot.batch.clone();
        if self.by_id.insert(id.clone(), (at, snapshot)).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > Self::CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.by_id.remove(&oldest);
            }
        }
    }

    pub(crate) fn get(&self, id: &BatchId) -> Option<(DateTime<Utc>, Snapshot)> {
        self.by_id.get(id).cloned()
    }
}

/// Where a read starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    At(DateTime<Utc>),
    First,
}

/// The latest snapshot of batch `id` in the progress stream; `None` if the stream holds none (or
/// does not exist: no tracker has run yet). `sent` is when the batch was sent, if known.
pub(crate) async fn latest(
    broker: &Broker,
    publisher: &Publisher,
    id: &BatchId,
    sent: Option<DateTime<Utc>>,
    patience: Duration,
) -> Result<Option<Snapshot>> {
    let marker = serde_json::to_vec(&serde_json::json!({ "end": uuid::Uuid::new_v4().to_string() }))
        .map_err(Error::serde("encode", "a stream end marker"))?;
    let outgoing =
        Outgoing { exchange: "", routing_key: BATCH_PROGRESS_STREAM, body: &marker, properties: persistent_json() };
    match publisher.publish(outgoing).await {
        Err(Error::Unroutable { .. }) => return Ok(None),
        published => published?,
    }
    let now = Utc::now();
    let starts: Vec<Start> = match sent {
        Some(sent) => vec![Start::At(sent - CLOCK_SLACK)],
        None => WINDOWS.iter().map(|back| Start::At(now - *back)).chain([Start::First]).collect(),
    };
    let reader = Reader { broker, id, marker: &marker, needle: needle(id)?, patience };
    // Each wider window stops where the one before began: what follows was read already.
    let mut read_from: Option<i64> = None;
    for start in starts {
        let (latest, first) = reader.read(start, read_from).await?;
        if latest.is_some() {
            return Ok(latest);
        }
        read_from = first.or(read_from);
    }
    Ok(None)
}

/// How a snapshot of batch `id` begins when encoded (its first field is the batch): only those are
/// decoded.
fn needle(id: &BatchId) -> Result<Vec<u8>> {
    let quoted = serde_json::to_string(id.as_str()).map_err(Error::serde("encode", "a batch id"))?;
    Ok(format!("{{\"batch\":{quoted},").into_bytes())
}

struct Reader<'a> {
    broker: &'a Broker,
    id: &'a BatchId,
    marker: &'a [u8],
    needle: Vec<u8>,
    patience: Duration,
}

impl Reader<'_> {
    /// The latest snapshot of the batch from `start` up to the marker, or up to stream offset
    /// `stop` if given; and the offset of the first message read.
    async fn read(&self, start: Start, stop: Option<i64>) -> Result<(Option<Snapshot>, Option<i64>)> {
        let channel = self.broker.channel().await?;
        let read = self.read_on(&channel, start, stop).await;
        if channel.status().connected() {
            drop(channel.close(200, "read".into()).await);
        }
        read
    }

    async fn read_on(
        &self,
        channel: &lapin::Channel,
        start: Start,
        stop: Option<i64>,
    ) -> Result<(Option<Snapshot>, Option<i64>)> {
        channel.basic_qos(PREFETCH, BasicQosOptions { global: false }).await.map_err(Error::amqp("basic.qos"))?;
        let offset = match start {
            Start::At(at) => AMQPValue::Timestamp(u64::try_from(at.timestamp()).unwrap_or(0)),
            Start::First => AMQPValue::LongString(LongString::from("first")),
        };
        let mut args = FieldTable::default();
        args.insert("x-stream-offset".into(), offset);
        let mut consumer = channel
            .basic_consume(BATCH_PROGRESS_STREAM.into(), "".into(), BasicConsumeOptions::default(), args)
            .await
            .map_err(Error::amqp("consume the batch progress stream"))?;
        let mut latest: Option<Snapshot> = None;
        let mut first: Option<i64> = None;
        let mut unacked = 0;
        loop {
            let next = tokio::time::timeout(self.patience, consumer.next())
                .await
                .map_err(Error::timeout("the batch progress stream", self.patience))?;
            let delivery = match next {
                Some(delivery) => delivery.map_err(Error::amqp("consume the batch progress stream"))?,
                None => {
                    let ended = lapin::ErrorKind::InvalidChannelState(
                        lapin::ChannelState::Closed,
                        "the broker ended the stream consumer",
                    );
                    return Err(Error::amqp("consume the batch progress stream")(ended.into()));
                }
            };
            let offset = stream_offset(&delivery);
            if delivery.data == self.marker || offset.zip(stop).is_some_and(|(offset, stop)| offset >= stop) {
                return Ok((latest, first));
            }
            first = first.or(offset);
            if delivery.data.starts_with(&self.needle)
                && let Ok(snapshot) = serde_json::from_slice::<Snapshot>(&delivery.data)
                && snapshot.batch == *self.id
                && latest.as_ref().is_none_or(|l| snapshot.seq >= l.seq)
            {
                latest = Some(snapshot);
            }
            unacked += 1;
            if unacked >= PREFETCH / 2 {
                unacked = 0;
                delivery
                    .acker
                    .ack(BasicAckOptions { multiple: true })
                    .await
                    .map_err(Error::amqp("ack the batch progress stream"))?;
            }
        }
    }
}

/// The position the broker gives a message it delivers from a stream (`x-stream-offset`).
fn stream_offset(delivery: &lapin::message::Delivery) -> Option<i64> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get("x-stream-offset")? {
        AMQPValue::LongLongInt(offset) => Some(*offset),
        AMQPValue::LongInt(offset) => Some(i64::from(*offset)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_snapshots_of_the_batch_match_the_needle() {
        let mine = Snapshot::new(BatchId::from("b\"1"), 3, None).encode().expect("encodes");
        let other = Snapshot::new(BatchId::from("b\"12"), 3, None).encode().expect("encodes");
        let needle = needle(&BatchId::from("b\"1")).expect("encodes");
        assert!(mine.starts_with(&needle));
        assert!(!other.starts_with(&needle));
    }

    #[test]
    fn a_client_forgets_its_oldest_batches_past_its_capacity() {
        let mut sent = SentBatches::default();
        for i in 0..=SentBatches::CAPACITY {
            sent.remember(Snapshot::new(BatchId::from(format!("b{i}")), 1, None), Utc::now());
        }
        assert!(sent.get(&BatchId::from("b0")).is_none());
        assert!(sent.get(&BatchId::from("b1")).is_some());
        assert_eq!(sent.by_id.len(), SentBatches::CAPACITY);
    }
}
