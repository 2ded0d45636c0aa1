//! The client's reply queue: one consumer that hands each result to the task waiting for it.
//!
//! Waiters are registered by job id before the job is published, so a result can never arrive
//! before its waiter. Non-final states (`STARTED`, `RETRY`) are skipped; a result nobody waits for
//! (its waiter timed out or was dropped) is logged and dropped. If the connection drops, the
//! consumer re-attaches to the same queue, which outlives the connection; a client given several
//! nodes of a cluster replicates its queue, so it re-attaches on another node when its own is lost.
//! Each result is acked once it is handed over, so results on their way when a connection is lost
//! are delivered again, not lost (a duplicate finds no waiter and is dropped).

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::protocol::ResultMessage;
use crate::topology;
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Jobs awaiting a result, by correlation id.
#[derive(Debug, Default)]
pub(crate) struct Waiters(Mutex<HashMap<String, oneshot::Sender<ResultMessage>>>);

impl Waiters {
    pub(crate) fn register(&self, id: &str) -> oneshot::Receiver<ResultMessage> {
        let (sender, receiver) = oneshot::channel();
        self.lock().insert(id.to_owned(), sender);
        receiver
    }

    pub(crate) fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    pub(crate) fn deliver(&self, id: &str, result: ResultMessage) {
        match self.lock().remove(id) {
            Some(sender) => drop(sender.send(result)),
            None => tracing::debug!(job.id = id, "result for a job nobody waits for; dropped"),
        }
    }

    /// Drops every waiter: their `Pending` handles fail with `Error::Closed`.
    fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<ResultMessage>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running reply consumer.
#[derive(Debug)]
pub(crate) struct Replies {
    queue: String,
    waiters: Arc<Waiters>,
    stop: CancellationToken,
    broker: Broker,
}

impl Replies {
    /// Declares the reply queue and starts consuming it; returns once the consumer is attached.
    pub(crate) async fn start(broker: Broker, queue: String, expires: Duration) -> Result<Self> {
        let (channel, consumer) = attach(&broker, &queue, expires).await?;
        let waiters = Arc::new(Waiters::default());
        let stop = CancellationToken::new();
        let consuming = Consuming {
            broker: broker.clone(),
            queue: queue.clone(),
            expires,
            waiters: Arc::clone(&waiters),
            stop: stop.clone(),
        };
        tokio::spawn(consuming.run(channel, consumer));
        Ok(Self { queue, waiters, stop, broker })
    }

    pub(crate) fn queue(&self) -> &str {
        &self.queue
    }

    pub(crate) fn waiters(&self) -> &Arc<Waiters> {
        &self.waiters
    }

    /// Stops consuming and deletes the reply queue.
    pub(crate) async fn close(&self) -> Result<()> {
        self.stop.cancel();
        self.waiters.clear();
        let channel = self.broker.channel().await?;
        channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .map_err(Error::amqp("reply queue delete"))?;
        drop(channel.close(200, "bye".into()).await);
        Ok(())
    }
}

async fn attach(broker: &Broker, queue: &str, expires: Duration) -> Result<(Channel, Consumer)> {
    let channel = broker.channel().await?;
    topology::declare_reply_queue(&channel, queue, expires, broker.nodes() > 1).await?;
    channel.basic_qos(REPLY_PREFETCH, BasicQosOptions::default()).await.map_err(Error::amqp("reply qos"))?;
    let options = BasicConsumeOptions { no_ack: false, ..BasicConsumeOptions::default() };
    let consumer = channel
        .basic_consume(queue.into(), "".into(), options, FieldTable::default())
        .await
        .map_err(Error::amqp("reply consume"))?;
    Ok((channel, consumer))
}

/// Results delivered to the reply consumer and not yet acked, at most.
const REPLY_PREFETCH: u16 = 1000;

/// Hands results to their waiters until stopped, re-attaching after a connection loss.
struct Consuming {
    broker: Broker,
    queue: String,
    expires: Duration,
    waiters: Arc<Waiters>,
    stop: CancellationToken,
}

impl Consuming {
    async fn run(self, mut channel: Channel, mut consumer: Consumer) {
        let queue = self.queue.as_str();
        loop {
            let next = tokio::select! {
                () = self.stop.cancelled() => return,
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    match ResultMessage::decode(&delivery.data) {
                        Ok(result) if result.status.is_ready() => {
                            let id = match delivery.properties.correlation_id() {
                                Some(id) => id.to_string(),
                                None => result.task_id.clone(),
                            };
                            self.waiters.deliver(&id, result);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(queue, error = %e, "undecodable message on the reply queue; dropped"),
                    }
                    // A failed ack means the channel is gone: the result comes again.
                    drop(delivery.acker.ack(BasicAckOptions::default()).await);
                }
                Some(Err(e)) => tracing::warn!(queue, error = %e, "reply consumer error"),
                None => {
                    drop(channel);
                    let attach = || attach(&self.broker, queue, self.expires);
                    match crate::reconnect::reconnect("reply consumer", &self.stop, attach).await {
                        Some(attached) => {
                            tracing::info!(queue, "reply consumer re-attached");
                            (channel, consumer) = attached;
                        }
                        None => return,
                    }
                }
            }
        }
    }
}
