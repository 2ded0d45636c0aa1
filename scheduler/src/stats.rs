//! [`SchedulerStats`]: counters of what a scheduler replica fired and held back, readable by code
//! that embeds a scheduler (health checks, tests).

use std::sync::atomic::{AtomicU64, Ordering};

/// What a replica did while it led.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    fired: AtomicU64,
    held: AtomicU64,
    dropped: AtomicU64,
}

impl SchedulerStats {
    /// Firings published and recorded.
    #[must_use]
    pub fn fired(&self) -> u64 {
        self.fired.load(Ordering::Relaxed)
    }

    /// Attempts to fire that were held back because a queue the firing sends to did not exist
    /// (each retry of the same firing counts again).
    #[must_use]
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Firings committed whose job the broker dropped: its queue was deleted between the check
    /// and the commit.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub(crate) fn count_fired(&self) -> u64 {
        self.fired.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn count_held(&self) -> u64 {
        self.held.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn count_dropped(&self) -> u64 {
        self.dropped.fetch_add(1, Ordering::Relaxed) + 1
    }
}
