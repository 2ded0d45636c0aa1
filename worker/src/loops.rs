//! [`QueueLoop`]: how one queue of the worker's set is consumed: alone ([`ConsumeLoop`]) or with
//! its priority tiers ([`TieredLoop`], when the worker's `priorities` setting is given).

use crate::consumer::{ConsumeLoop, End};
use crate::tiers::TieredLoop;
use tokio_util::sync::CancellationToken;

/// The consume loop of one queue of the set.
#[expect(clippy::large_enum_variant, reason = "one per queue, made when consuming starts and moved into its task")]
pub(crate) enum QueueLoop {
    Plain(ConsumeLoop),
    Tiered(TieredLoop),
}

impl QueueLoop {
    /// The queue's name in the worker's queue set.
    pub(crate) fn name(&self) -> &str {
        match self {
            QueueLoop::Plain(plain) => plain.queue.name(),
            QueueLoop::Tiered(tiered) => tiered.name(),
        }
    }

    /// Cancelled to stop consuming this queue alone.
    pub(crate) fn own(&self) -> CancellationToken {
        match self {
            QueueLoop::Plain(plain) => plain.own.clone(),
            QueueLoop::Tiered(tiered) => tiered.own(),
        }
    }

    /// Consumes until stopped, cancelled or lost.
    pub(crate) async fn run(self) -> End {
        match self {
            QueueLoop::Plain(plain) => plain.run().await,
            QueueLoop::Tiered(tiered) => tiered.run().await,
        }
    }
}
