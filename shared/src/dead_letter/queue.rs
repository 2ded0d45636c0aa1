//! [`DeadLetters`]: the dead-letter queue of one work queue, seen from a client.

use super::marks::revived;
use super::reason::{ATTEMPTS_HEADER, ERROR_HEADER, QUEUE_HEADER, REASON_HEADER, TIME_HEADER};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::ids::JobId;
use crate::protocol::amqp_value::to_json;
use crate::protocol::headers::header_str;
use crate::publisher::{Outgoing, Publisher};
use crate::topology::{self, WorkQueue};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueuePurgeOptions};
use std::sync::Arc;

/// One dead letter, as [`DeadLetters::list`] describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The job id (`id` header), or an event's id (`x-lepus-event-id`), if the message had one.
    pub id: Option<JobId>,
    /// The job name (`task` header), or an event's name (`x-lepus-event`), if the message had one.
    pub task: Option<String>,
    /// Why: `undecodable`, `unknown-job`, `bad-input`, `too-large`, `failed` (from a worker), or
    /// the broker's reason (`delivery_limit`, `rejected`, `expired`, `maxlen`).
    pub reason: String,
    /// The error in words, when a worker dead-lettered it.
    pub error: Option<String>,
    /// How many times the job ran, when a worker dead-lettered it.
    pub attempts: Option<u32>,
    /// When a worker dead-lettered it, ISO 8601.
    pub dead_lettered_at: Option<String>,
}

impl DeadLetter {
    fn describe(delivery: &Delivery) -> Self {
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let text = |name: &str| header_str(&headers, name).map(|s| s.into_owned());
        Self {
            // An event's dead letter names it by its own headers.
            id: text("id").or_else(|| text(crate::event::EVENT_ID_HEADER)).map(JobId::from),
            task: text("task").or_else(|| text(crate::event::EVENT_HEADER)),
            reason: text(REASON_HEADER).or_else(|| text("x-first-death-reason")).unwrap_or_else(|| "unknown".into()),
            error: text(ERROR_HEADER),
            attempts: headers
                .inner()
                .get(ATTEMPTS_HEADER)
                .and_then(|v| to_json(v).as_u64())
                .and_then(|a| u32::try_from(a).ok()),
            dead_lettered_at: text(TIME_HEADER),
        }
    }
}

/// The dead letters of one work queue. Get it with [`crate::Client::dead_letters`].
#[derive(Debug, Clone)]
pub struct DeadLetters {
    broker: Broker,
    publisher: Arc<Publisher>,
    queue: WorkQueue,
}

impl DeadLetters {
    pub(crate) fn new(broker: Broker, publisher: Arc<Publisher>, queue: WorkQueue) -> Self {
        Self { broker, publisher, queue }
    }

    /// Up to `limit` dead letters, oldest first, left in place.
    pub async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let channel = self.channel().await?;
        let mut letters = Vec::new();
        while letters.len() < limit {
            match self.take(&channel).await? {
                Some(delivery) => letters.push(DeadLetter::describe(&delivery)),
                None => break,
            }
        }
        // Closing the channel hands every message taken back to the queue, unacked. A quorum
        // queue takes them back asynchronously: wait until it shows them again, so that what
        // follows a listing (a requeue by id, say) finds them.
        drop(channel.close(200, "listed".into()).await);
        for _ in 0..100 {
            if self.count().await? >= letters.len() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Ok(letters)
    }

    /// Sends the dead letter of job `id` back to its work queue, with its attempts reset.
    /// Returns whether it was found.
    pub async fn requeue(&self, id: &JobId) -> Result<bool> {
        let channel = self.channel().await?;
        let mut found = false;
        while let Some(delivery) = self.take(&channel).await? {
            if DeadLetter::describe(&delivery).id.as_ref() == Some(id) {
                self.revive(&delivery).await?;
                found = true;
                break;
            }
        }
        drop(channel.close(200, "requeued".into()).await);
        Ok(found)
    }

    /// Sends every dead letter present now back to the work queue; returns how many.
    pub async fn requeue_all(&self) -> Result<usize> {
        self.requeue_all_with(|_, _| {}).await
    }

    /// Like [`DeadLetters::requeue_all`], telling `progress` how many of how many are back after
    /// each one.
    pub async fn requeue_all_with(&self, mut progress: impl FnMut(usize, usize)) -> Result<usize> {
        let channel = self.channel().await?;
        let present = self.count().await?;
        let mut revived = 0;
        while revived < present {
            let Some(delivery) = self.take(&channel).await? else { break };
            self.revive(&delivery).await?;
            revived += 1;
            progress(revived, present);
        }
        drop(channel.close(200, "requeued".into()).await);
        Ok(revived)
    }

    /// Deletes every dead letter; returns how many there were.
    pub async fn purge(&self) -> Result<u32> {
        let channel = self.channel().await?;
        let purged = channel
            .queue_purge(self.queue.dead_letter_queue().into(), QueuePurgeOptions::default())
            .await
            .map_err(Error::amqp("queue purge"))?;
        drop(channel.close(200, "purged".into()).await);
        Ok(purged)
    }

    async fn channel(&self) -> Result<Channel> {
        self.broker.channel().await
    }

    /// Dead letters present now.
    async fn count(&self) -> Result<usize> {
        let state = topology::inspect_queue(&self.broker, &self.queue.dead_letter_queue()).await?;
        Ok(state.map_or(0, |state| state.messages as usize))
    }

    async fn take(&self, channel: &Channel) -> Result<Option<Delivery>> {
        let got = channel
            .basic_get(self.queue.dead_letter_queue().into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(Error::amqp("basic.get"))?;
        Ok(got.map(|message| message.delivery))
    }

    /// Publishes a dead letter back to the queue it was for (its `x-lepus-queue`, else this work
    /// queue), then acks it in the dead-letter queue.
    async fn revive(&self, delivery: &Delivery) -> Result<()> {
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let to = header_str(&headers, QUEUE_HEADER).map_or_else(|| self.queue.name().to_owned(), |q| q.into_owned());
        let outgoing = Outgoing {
            exchange: "",
            routing_key: &to,
            body: &delivery.data,
            properties: revived(&delivery.properties),
        };
        self.publisher.publish(outgoing).await?;
        delivery.acker.ack(BasicAckOptions::default()).await.map_err(Error::amqp("ack"))?;
        Ok(())
    }
}
