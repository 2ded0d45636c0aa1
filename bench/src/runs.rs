//! The runs of `bench.stamp` jobs that a run's workers report, gathered in one place: which jobs
//! ran (and which more than once), how late each one started, when each report arrived, and how
//! many each worker ran.

use crate::stamp::Ran;
use crate::worker_process::WorkerProcess;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::mpsc;

/// What the workers reported about jobs `0..jobs`.
#[derive(Debug)]
pub(crate) struct Tally {
    ran: Vec<bool>,
    /// Jobs that ran at least once.
    pub(crate) distinct: u32,
    /// Runs of a job that had already run.
    pub(crate) repeated: u32,
    /// Runs reported by each worker, in the order of the workers.
    pub(crate) per_worker: Vec<u32>,
    /// How late each run started, microseconds (negative: before it was due).
    pub(crate) late_us: Vec<i64>,
    /// When each run's report arrived, in arrival order.
    pub(crate) arrivals: Vec<Instant>,
}

impl Tally {
    fn new(jobs: u32, workers: usize) -> Self {
        let jobs = jobs as usize;
        Self {
            ran: vec![false; jobs],
            distinct: 0,
            repeated: 0,
            per_worker: vec![0; workers],
            late_us: Vec::with_capacity(jobs),
            arrivals: Vec::with_capacity(jobs),
        }
    }

    fn record(&mut self, worker: usize, run: Ran, arrived: Instant) -> anyhow::Result<()> {
        let Some(ran) = self.ran.get_mut(run.index as usize) else {
            anyhow::bail!("a worker ran job {}, which this run never sent", run.index);
        };
        if std::mem::replace(ran, true) {
            self.repeated += 1;
        } else {
            self.distinct += 1;
        }
        self.per_worker[worker] += 1;
        self.late_us.push(run.late_us);
        self.arrivals.push(arrived);
        Ok(())
    }

    /// Jobs that never ran.
    pub(crate) fn lost(&self) -> u32 {
        self.ran.len() as u32 - self.distinct
    }

    /// The arrival of the last report.
    pub(crate) fn last(&self) -> Option<Instant> {
        self.arrivals.last().copied()
    }
}

/// Gathers the reports of `workers` about jobs `0..jobs` until every job has run or `deadline`
/// passes, counting distinct jobs in `progress`. Takes each worker's runs (see
/// [`WorkerProcess::take_runs`]).
pub(crate) async fn gather(
    workers: &mut [WorkerProcess],
    jobs: u32,
    deadline: Instant,
    progress: &Arc<AtomicU64>,
) -> anyhow::Result<Tally> {
    let (sender, mut runs) = mpsc::unbounded_channel();
    for (worker, process) in workers.iter_mut().enumerate() {
        let mut reported = process.take_runs().ok_or_else(|| anyhow::anyhow!("the worker's runs were taken"))?;
        let sender = sender.clone();
        tokio::spawn(async move {
            while let Some((run, arrived)) = reported.recv().await {
                if sender.send((worker, run, arrived)).is_err() {
                    return;
                }
            }
        });
    }
    drop(sender);
    let mut tally = Tally::new(jobs, workers.len());
    while tally.distinct < jobs {
        match tokio::time::timeout_at(deadline.into(), runs.recv()).await {
            Ok(Some((worker, run, arrived))) => {
                tally.record(worker, run, arrived)?;
                progress.store(tally.distinct.into(), Ordering::Relaxed);
            }
            Ok(None) | Err(_) => break,
        }
    }
    Ok(tally)
}
