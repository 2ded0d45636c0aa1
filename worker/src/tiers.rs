//! [`TieredLoop`]: one work queue consumed with its priority tiers (`<q>.high`, `<q>`, `<q>.low`)
//! on one channel, a consumer per tier, each with prefetch [`prefetch`] (twice the concurrency).
//!
//! The broker pushes each tier's deliveries into the worker; the loop holds them in a
//! [`Selector`], and each time a concurrency permit frees it first takes every delivery that has
//! already arrived, then starts the one the selector chooses (strict order or weights). So a low
//! job starts ahead of a high one only if it was in the worker already (prefetched) when the high
//! one arrived: the low tier's prefetch bounds how many low jobs can start after a high job was
//! published and before it starts.
//!
//! Prefetch is twice the concurrency, not equal to it as for a plain queue: with every slot
//! busy with high jobs, the broker's next high deliveries are then already in the worker when a
//! slot frees, instead of on their way while a held low one takes the slot.
//!
//! It keeps what the plain [`crate::consumer::ConsumeLoop`] does: each delivery settles on the
//! channel it came on (one [`crate::acks::Acks`] per channel), each tier is marked consumed
//! while the loop runs ([`crate::health`]), a stop or a `cancel_consumer` hands back (nacks with
//! requeue) every delivery held and not started, and a lost consumer or channel ends the loop
//! with [`End::Lost`] (the broker requeues what the worker held).

use crate::acks::Acks;
use crate::consumer::{ConsumeLoop, End};
use crate::delivery::{Shared, process};
use crate::health::{Consuming, Health};
use crate::priorities::Priorities;
use crate::selector::{HOLD_LIMIT, Selector};
use futures_lite::StreamExt;
use lepus::WorkQueue;
use lepus::internal::topology::tier_queues;
use lepus::lapin::message::Delivery;
use lepus::lapin::options::BasicCancelOptions;
use lepus::lapin::{Channel, Consumer};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The prefetch of each tier's consumer for a worker running `concurrency` jobs at once.
pub(crate) fn prefetch(concurrency: u16) -> u16 {
    concurrency.saturating_mul(2)
}

/// The names of the queues a worker consumes for `queues`: each with its tiers (highest first)
/// when `order` is set, else each alone.
pub(crate) fn consumed(queues: &[Arc<WorkQueue>], order: Option<Priorities>) -> lepus::Result<Vec<String>> {
    let mut names = Vec::new();
    for queue in queues {
        match order {
            Some(_) => names.extend(tier_queues(queue)?.iter().map(|tier| tier.name().to_owned())),
            None => names.push(queue.name().to_owned()),
        }
    }
    Ok(names)
}

/// One tier: its queue and its consumer.
struct Tier {
    queue: Arc<WorkQueue>,
    consumer: Consumer,
}

/// A work queue and its tiers, consumed as one.
pub(crate) struct TieredLoop {
    /// High, normal (the queue itself), low.
    tiers: [Tier; 3],
    selector: Selector<Delivery>,
    channel: Channel,
    shared: Arc<Shared>,
    acks: Acks,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    session: CancellationToken,
    health: Arc<Health>,
    own: CancellationToken,
}

/// What woke the loop.
#[expect(
    clippy::large_enum_variant,
    reason = "made and matched at once, never stored: boxing would cost an allocation per delivery"
)]
enum Step {
    Stop,
    Lost,
    Cancel,
    Received(usize, Option<Result<Delivery, lepus::lapin::Error>>),
    Permit(Result<OwnedSemaphorePermit, AcquireError>),
}

type Acquiring = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

impl TieredLoop {
    /// The loops of the three tiers (high, normal, low: consuming on one channel) as one, which
    /// starts their jobs in `order`.
    pub(crate) fn new(order: Priorities, [high, normal, low]: [ConsumeLoop; 3]) -> Self {
        let tier = |l: ConsumeLoop| Tier { queue: l.queue, consumer: l.consumer };
        let ConsumeLoop { queue, consumer, channel, shared, acks, permits, tracker, session, health, own, .. } = normal;
        Self {
            tiers: [tier(high), Tier { queue, consumer }, tier(low)],
            selector: Selector::new(order, HOLD_LIMIT),
            channel,
            shared,
            acks,
            permits,
            tracker,
            session,
            health,
            own,
        }
    }

    /// The queue (the normal tier) the worker's queue set knows this loop by.
    pub(crate) fn name(&self) -> &str {
        self.tiers[1].queue.name()
    }

    /// Cancelled to stop consuming this queue and its tiers.
    pub(crate) fn own(&self) -> CancellationToken {
        self.own.clone()
    }

    pub(crate) async fn run(mut self) -> End {
        let consuming: Vec<Consuming> =
            self.tiers.iter().map(|tier| self.health.consuming(tier.queue.name())).collect();
        let stop = self.shared.stop.clone();
        let mut acquiring: Option<Acquiring> = None;
        loop {
            // Once stopping, the select below hands back what is held instead.
            if acquiring.is_none() && !self.selector.is_empty() && !stop.is_cancelled() {
                match Arc::clone(&self.permits).try_acquire_owned() {
                    // A free slot: start at once, without a trip round the loop.
                    Ok(permit) => {
                        if !self.start_next(permit).await {
                            return End::Lost;
                        }
                        continue;
                    }
                    Err(TryAcquireError::Closed) => return End::Stopped,
                    Err(TryAcquireError::NoPermits) => {
                        acquiring = Some(Box::pin(Arc::clone(&self.permits).acquire_owned()));
                    }
                }
            }
            let [high, normal, low] = &mut self.tiers;
            let step = tokio::select! {
                biased;
                () = stop.cancelled() => Step::Stop,
                () = self.session.cancelled() => Step::Lost,
                () = self.own.cancelled() => Step::Cancel,
                next = high.consumer.next() => Step::Received(0, next),
                next = normal.consumer.next() => Step::Received(1, next),
                next = low.consumer.next() => Step::Received(2, next),
                permit = async { acquiring.as_mut().expect("a permit is asked for").await }, if acquiring.is_some() => {
                    Step::Permit(permit)
                }
            };
            match step {
                Step::Stop => return self.hand_back().await,
                Step::Lost | Step::Received(_, None) => return End::Lost,
                Step::Cancel => {
                    consuming.into_iter().for_each(Consuming::release);
                    self.hand_back().await;
                    tracing::info!(queue = self.name(), "no longer consuming it and its tiers (remote control)");
                    return End::Cancelled;
                }
                Step::Received(tier, Some(Ok(delivery))) => self.hold(tier, delivery),
                Step::Received(tier, Some(Err(e))) => {
                    tracing::warn!(queue = self.tiers[tier].queue.name(), error = %e, "consumer error");
                }
                Step::Permit(Err(_)) => return End::Stopped,
                Step::Permit(Ok(permit)) => {
                    acquiring = None;
                    if !self.start_next(permit).await {
                        return End::Lost;
                    }
                }
            }
        }
    }

    /// Starts the delivery the selector chooses with `permit`, after taking what has arrived (a
    /// higher tier's delivery that arrived meanwhile must be seen by the choice); false if a
    /// consumer is gone.
    async fn start_next(&mut self, permit: OwnedSemaphorePermit) -> bool {
        if !self.take_arrived().await {
            return false;
        }
        if let Some((tier, delivery)) = self.selector.next(Instant::now()) {
            let queue = Arc::clone(&self.tiers[tier].queue);
            let (shared, acks) = (Arc::clone(&self.shared), self.acks.clone());
            self.tracker.spawn(process(delivery, queue, None, shared, acks, permit));
        }
        true
    }

    /// Holds `delivery` of `tier` until a permit frees.
    fn hold(&mut self, tier: usize, delivery: Delivery) {
        // A delivery prefetched before a connection loss can no longer be acked: the broker has
        // already requeued it, so running it would only duplicate the work.
        if delivery.acker.usable() {
            self.selector.push(tier, delivery, Instant::now());
        }
    }

    /// Holds every delivery that has already arrived, without waiting; false if a consumer is
    /// gone.
    async fn take_arrived(&mut self) -> bool {
        for tier in 0..3 {
            loop {
                match futures_lite::future::poll_once(self.tiers[tier].consumer.next()).await {
                    None => break,
                    Some(None) => return false,
                    Some(Some(Ok(delivery))) => self.hold(tier, delivery),
                    Some(Some(Err(e))) => {
                        tracing::warn!(queue = self.tiers[tier].queue.name(), error = %e, "consumer error");
                    }
                }
            }
        }
        true
    }

    /// Hands back what is held, cancels the three consumers and hands back what they still had.
    async fn hand_back(&mut self) -> End {
        let held: Vec<u64> = self.selector.drain().map(|delivery| delivery.delivery_tag).collect();
        for tag in held {
            self.acks.requeue(tag).await;
        }
        for tier in &mut self.tiers {
            let cancelled = self.channel.basic_cancel(tier.consumer.tag(), BasicCancelOptions::default());
            if tokio::time::timeout(Duration::from_secs(5), cancelled).await.is_ok() {
                while let Ok(Some(Ok(delivery))) =
                    tokio::time::timeout(Duration::from_secs(5), tier.consumer.next()).await
                {
                    self.acks.requeue(delivery.delivery_tag).await;
                }
            }
        }
        End::Stopped
    }
}
