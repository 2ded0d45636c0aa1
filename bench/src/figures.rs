//! The figures one side yields in one round, and the arithmetic over them: rates, percentiles,
//! medians.

use std::time::Duration;

/// What one side measured in one round.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Figures {
    /// (a) jobs per second, first publish to the worker's N-th ack.
    pub(crate) jobs_per_s: f64,
    /// (b) jobs per second, first publish to the N-th result received.
    pub(crate) results_per_s: f64,
    /// (c) median call round trip, milliseconds.
    pub(crate) call_p50_ms: f64,
    /// (c) 99th percentile call round trip, milliseconds.
    pub(crate) call_p99_ms: f64,
    /// The worker's CPU time (user and system) per job over the timed phases, microseconds: its
    /// own cost, much less noisy than the rates on a shared machine.
    pub(crate) cpu_us_per_job: f64,
    /// The worker's resident memory after start-up, before any load, MiB.
    pub(crate) rest_mib: f64,
    /// The worker's peak resident memory over the whole run, MiB.
    pub(crate) peak_mib: f64,
}

/// Both sides' figures of one round: the baseline's (raw lapin, or Lepus without metrics) and
/// those of the contender measured against it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoundFigures {
    pub(crate) baseline: Figures,
    pub(crate) measured: Figures,
}

/// Events per second.
pub(crate) fn rate(events: u64, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// The nearest-rank `p`-th percentile (0 < p ≤ 100) of sorted durations, in milliseconds.
pub(crate) fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    nearest_rank(sorted, p).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

/// The nearest-rank `p`-th percentile (0 < p ≤ 100) of sorted values; `None` if there are none.
pub(crate) fn nearest_rank<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

/// The median, and the smallest and largest value.
pub(crate) fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    (median, sorted.first().copied().unwrap_or(f64::NAN), sorted.last().copied().unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&sorted, 50.0), 50.0);
        assert_eq!(percentile_ms(&sorted, 99.0), 99.0);
        assert_eq!(percentile_ms(&sorted[..1], 99.0), 1.0);
        assert!(percentile_ms(&[], 50.0).is_nan());
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(spread(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(spread(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
    }
}
