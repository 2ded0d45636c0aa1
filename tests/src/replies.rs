//! [`RawReplies`]: a reply queue read with plain lapin, so that a duplicate result is seen
//! rather than dropped (a Lepus client hands each job one result and drops the rest).

use crate::queues::{TestQueue, unique_name};
use futures_lite::StreamExt;
use lepus::internal::topology;
use lepus::lapin::options::{BasicConsumeOptions, QueueDeleteOptions};
use lepus::lapin::types::FieldTable;
use lepus::lapin::{Channel, Consumer};
use lepus::protocol::ResultMessage;
use std::time::{Duration, Instant};

/// A uniquely named reply queue and its consumer; `delete` removes the queue (it also expires
/// five minutes after its last use, should a test fail first).
#[derive(Debug)]
pub struct RawReplies {
    name: String,
    channel: Channel,
    consumer: Consumer,
}

impl RawReplies {
    /// Declares the reply queue on `queue`'s connection and starts consuming it.
    pub async fn open(queue: &TestQueue) -> Self {
        let name = unique_name("replies");
        let channel = queue.broker().channel().await.expect("channel");
        topology::declare_reply_queue(&channel, &name, Duration::from_secs(300), false).await.expect("reply queue");
        let no_ack = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
        let consumer = channel
            .basic_consume(name.as_str().into(), "".into(), no_ack, FieldTable::default())
            .await
            .expect("consume");
        Self { name, channel, consumer }
    }

    /// The queue's name, for `reply_to`.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits up to `timeout` for `n` results (panics if fewer arrive), then one more quiet
    /// second, in which a duplicate would show up; returns every result that arrived.
    pub async fn take(&mut self, n: usize, timeout: Duration) -> Vec<ResultMessage> {
        let mut all = Vec::new();
        let deadline = Instant::now() + timeout;
        while all.len() < n {
            match tokio::time::timeout_at(deadline.into(), self.consumer.next()).await {
                Ok(Some(Ok(delivery))) => all.push(ResultMessage::decode(&delivery.data).expect("a result")),
                Ok(other) => panic!("reply consumer ended: {other:?}"),
                Err(_) => panic!("only {} of {n} results arrived", all.len()),
            }
        }
        while let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_secs(1), self.consumer.next()).await {
            all.push(ResultMessage::decode(&delivery.data).expect("a result"));
        }
        all
    }

    /// Deletes the reply queue.
    pub async fn delete(self) {
        drop(self.channel.queue_delete(self.name.as_str().into(), QueueDeleteOptions::default()).await);
    }
}
