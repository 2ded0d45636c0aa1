//! What each side must be able to do, so that one piece of code ([`crate::phases`]) drives and
//! times both sides alike.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// How long a job's result may take, in phases (b) and (c).
pub(crate) const RESULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The sending end of one side.
pub(crate) trait Producer {
    /// Sends `n` jobs that want no result, with at most the window's worth awaiting their
    /// confirm at once; returns when all are confirmed. Counts confirmed jobs in `sent`.
    async fn send(&self, n: u64, sent: &Arc<AtomicU64>) -> anyhow::Result<()>;

    /// Sends `n` jobs whose results come back to this producer, windowed as [`Producer::send`];
    /// returns the instant the `n`-th result arrived. Counts in `sent` and `received`.
    async fn send_for_results(
        &self,
        n: u64,
        sent: &Arc<AtomicU64>,
        received: &Arc<AtomicU64>,
    ) -> anyhow::Result<Instant>;

    /// Sends one job and waits for its result.
    async fn call(&self) -> anyhow::Result<()>;

    /// Closes the connection.
    async fn close(self) -> anyhow::Result<()>;
}
