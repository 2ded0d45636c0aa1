//! The consume loop of one queue on one channel.
//!
//! While it runs, the loop marks its queue as consumed (see [`crate::health`]). Each delivery
//! waits for a concurrency permit, then runs as its own task. When the worker is
//! asked to stop, the loop cancels its consumer and hands back (nacks with requeue) whatever the
//! broker had already pushed but no job had started on.

use crate::acks::Acks;
use crate::delivery::{Shared, process};
use crate::health::Health;
use crate::subscription::Service;
use futures_lite::StreamExt;
use lepus::WorkQueue;
use lepus::lapin::options::BasicCancelOptions;
use lepus::lapin::{Channel, Consumer};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How a consume loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The worker is stopping; the consumer was cancelled.
    Stopped,
    /// The consumer or its channel went away (connection loss, queue deleted…).
    Lost,
    /// This queue alone is no longer consumed (`cancel_consumer`); the others go on.
    Cancelled,
}

pub(crate) struct ConsumeLoop {
    pub(crate) queue: Arc<WorkQueue>,
    /// The service whose events `queue` holds; `None` for a work queue.
    pub(crate) service: Option<Arc<Service>>,
    pub(crate) channel: Channel,
    pub(crate) consumer: Consumer,
    pub(crate) shared: Arc<Shared>,
    /// Settles the deliveries of `channel`.
    pub(crate) acks: Acks,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) tracker: TaskTracker,
    /// Cancelled when another loop of the same session lost its channel.
    pub(crate) session: CancellationToken,
    pub(crate) health: Arc<Health>,
    /// Cancelled to stop consuming this queue alone.
    pub(crate) own: CancellationToken,
}

impl ConsumeLoop {
    pub(crate) async fn run(mut self) -> End {
        let consuming = self.health.consuming(self.queue.name());
        let stop = self.shared.stop.clone();
        loop {
            let next = tokio::select! {
                biased;
                () = stop.cancelled() => return self.cancel().await,
                () = self.session.cancelled() => return End::Lost,
                () = self.own.cancelled() => {
                    consuming.release();
                    self.cancel().await;
                    tracing::info!(queue = self.queue.name(), "no longer consuming (remote control)");
                    return End::Cancelled;
                }
                next = self.consumer.next() => next,
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => {
                    tracing::warn!(queue = self.queue.name(), error = %e, "consumer error");
                    continue;
                }
                None => return End::Lost,
            };
            let permit = tokio::select! {
                biased;
                () = stop.cancelled() => {
                    self.acks.requeue(delivery.delivery_tag).await;
                    return self.cancel().await;
                }
                permit = Arc::clone(&self.permits).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return End::Stopped,
                },
            };
            // A delivery prefetched before a connection loss can no longer be acked: the broker
            // has already requeued it, so running it would only duplicate the work.
            if delivery.acker.usable() {
                let (queue, shared, acks) = (Arc::clone(&self.queue), Arc::clone(&self.shared), self.acks.clone());
                let service = self.service.clone();
                self.tracker.spawn(process(delivery, queue, service, shared, acks, permit));
            }
        }
    }

    /// Cancels the consumer and hands back the deliveries it still holds.
    async fn cancel(&mut self) -> End {
        let tag = self.consumer.tag();
        let cancelled = self.channel.basic_cancel(tag, BasicCancelOptions::default());
        if tokio::time::timeout(Duration::from_secs(5), cancelled).await.is_ok() {
            while let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_secs(5), self.consumer.next()).await
            {
                self.acks.requeue(delivery.delivery_tag).await;
            }
        }
        End::Stopped
    }
}
