//! A worker's resident memory sampled at a fixed interval while a run lasts, to tell whether it
//! stays flat: the smallest and largest sample, and the largest in the first and in the last
//! third of the run.

use crate::proc_status;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Samples being taken in a task of their own.
#[derive(Debug)]
pub(crate) struct RssSampler {
    stop: oneshot::Sender<()>,
    sampling: JoinHandle<anyhow::Result<Vec<u64>>>,
}

/// What the samples say, KiB.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RssSummary {
    pub(crate) min_kib: u64,
    pub(crate) max_kib: u64,
    pub(crate) first_third_max_kib: u64,
    pub(crate) last_third_max_kib: u64,
}

impl RssSampler {
    /// Starts reading the resident memory of process `pid` every `every`.
    pub(crate) fn start(pid: u32, every: Duration) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let sampling = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut ticks = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = &mut stopped => return Ok(samples),
                    _ = ticks.tick() => samples.push(proc_status::read(pid)?.resident_kib),
                }
            }
        });
        Self { stop, sampling }
    }

    /// Stops sampling and sums up; fails if the process could not be read (it exited, say).
    pub(crate) async fn stop(self) -> anyhow::Result<RssSummary> {
        // The sampling task is gone if it failed; its error comes out of the join.
        let _ = self.stop.send(());
        let samples = self.sampling.await??;
        anyhow::ensure!(!samples.is_empty(), "no memory sample was taken");
        Ok(summarize(&samples))
    }
}

fn summarize(samples: &[u64]) -> RssSummary {
    let max = |part: &[u64]| part.iter().copied().max().unwrap_or_default();
    let third = samples.len().div_ceil(3);
    RssSummary {
        min_kib: samples.iter().copied().min().unwrap_or_default(),
        max_kib: max(samples),
        first_third_max_kib: max(&samples[..third]),
        last_third_max_kib: max(&samples[samples.len() - third..]),
    }
}

#[cfg(test)]
mod tests {
    use super::summarize;

    #[test]
    fn sums_up_the_thirds() {
        let summary = summarize(&[5, 9, 7, 6, 8, 4, 3]);
        assert_eq!((summary.min_kib, summary.max_kib), (3, 9));
        assert_eq!((summary.first_third_max_kib, summary.last_third_max_kib), (9, 8));
        let one = summarize(&[5]);
        assert_eq!((one.first_third_max_kib, one.last_third_max_kib), (5, 5));
    }
}
