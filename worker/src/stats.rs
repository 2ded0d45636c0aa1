//! [`WorkerStats`]: counters of what a worker did, logged every few seconds while they change and
//! readable by code that embeds a worker (health checks, benchmarks).

use crate::outcome::Ended;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Deliveries a worker has settled, by how they ended. A delivery counts once its ack has gone
/// to the broker.
#[derive(Debug, Default)]
pub struct WorkerStats {
    succeeded: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
    retried: AtomicU64,
    deferred: AtomicU64,
    expired: AtomicU64,
    revoked: AtomicU64,
    held_callbacks: AtomicU64,
    dropped_callbacks: AtomicU64,
    unknown_batch_records: AtomicU64,
    replayed: AtomicU64,
    skipped_at_switch: AtomicU64,
}

impl WorkerStats {
    /// Jobs that returned a value.
    #[must_use]
    pub fn succeeded(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed)
    }

    /// Jobs that failed (the handler returned an error or panicked).
    #[must_use]
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Messages the worker could not run, moved to the dead-letter queue (failed jobs that end
    /// there count as failed).
    #[must_use]
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }

    /// Failed runs sent back through the delay cascade for another attempt.
    #[must_use]
    pub fn retried(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    /// Messages that arrived before their `eta` and were sent back to the delay cascade.
    #[must_use]
    pub fn deferred(&self) -> u64 {
        self.deferred.load(Ordering::Relaxed)
    }

    /// Jobs not run because their `expires` had passed.
    #[must_use]
    pub fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }

    /// Jobs not run, or stopped, because they were revoked.
    #[must_use]
    pub fn revoked(&self) -> u64 {
        self.revoked.load(Ordering::Relaxed)
    }

    /// Attempts to send a finished batch's callback that found no queue of its name, on this
    /// worker's batch tracker (each retry counts again). The callback is kept and tried again.
    #[must_use]
    pub fn held_callbacks(&self) -> u64 {
        self.held_callbacks.load(Ordering::Relaxed)
    }

    /// Batch callbacks the broker dropped: their queue was deleted between the check and the
    /// commit.
    #[must_use]
    pub fn dropped_callbacks(&self) -> u64 {
        self.dropped_callbacks.load(Ordering::Relaxed)
    }

    /// Batch records this worker's tracker dropped because it knew no such batch: one finished
    /// and compacted away (a record repeated after a crash), or one never opened.
    #[must_use]
    pub fn unknown_batch_records(&self) -> u64 {
        self.unknown_batch_records.load(Ordering::Relaxed)
    }

    /// Events a new service's replay handled from the stream (succeeded or dead-lettered).
    #[must_use]
    pub fn replayed(&self) -> u64 {
        self.replayed.load(Ordering::Relaxed)
    }

    /// Deliveries of a service's queue acked without running after its replay: the replay had
    /// handled them already.
    #[must_use]
    pub fn skipped_at_switch(&self) -> u64 {
        self.skipped_at_switch.load(Ordering::Relaxed)
    }

    /// All settled deliveries.
    #[must_use]
    pub fn settled(&self) -> u64 {
        self.snapshot().iter().sum()
    }

    pub(crate) fn count(&self, ended: Ended) {
        let counter = match ended {
            Ended::Succeeded => &self.succeeded,
            Ended::Failed => &self.failed,
            Ended::DeadLettered => &self.dead_lettered,
            Ended::Retried => &self.retried,
            Ended::Deferred => &self.deferred,
            Ended::Expired => &self.expired,
            Ended::Revoked => &self.revoked,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_replayed(&self) -> u64 {
        self.replayed.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn count_skipped_at_switch(&self) {
        self.skipped_at_switch.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_held_callback(&self) -> u64 {
        self.held_callbacks.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn count_unknown_batch_records(&self, records: u64) -> u64 {
        self.unknown_batch_records.fetch_add(records, Ordering::Relaxed) + records
    }

    pub(crate) fn count_dropped_callback(&self) -> u64 {
        self.dropped_callbacks.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn snapshot(&self) -> [u64; 7] {
        [
            self.succeeded(),
            self.failed(),
            self.dead_lettered(),
            self.retried(),
            self.deferred(),
            self.expired(),
            self.revoked(),
        ]
    }

    /// Logs the totals and the rate since the last report whenever they changed.
    pub(crate) async fn report_every(&self, period: Duration) {
        let mut last = (self.snapshot(), Instant::now());
        loop {
            tokio::time::sleep(period).await;
            let now = (self.snapshot(), Instant::now());
            if now.0 != last.0 {
                let done = |s: [u64; 7]| s.iter().sum::<u64>();
                let rate = (done(now.0) - done(last.0)) as f64 / now.1.duration_since(last.1).as_secs_f64();
                let [succeeded, failed, dead_lettered, retried, deferred, expired, revoked] = now.0;
                let jobs_per_s = format!("{rate:.1}");
                tracing::info!(
                    succeeded,
                    failed,
                    dead_lettered,
                    retried,
                    deferred,
                    expired,
                    revoked,
                    jobs_per_s,
                    "progress"
                );
            }
            last = now;
        }
    }

    pub(crate) fn log_totals(&self) {
        let [succeeded, failed, dead_lettered, retried, deferred, expired, revoked] = self.snapshot();
        tracing::info!(succeeded, failed, dead_lettered, retried, deferred, expired, revoked, "totals");
    }
}
