//! [`RetryPolicy`]: how often a failing job is run again, and how long it waits in between.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Attempts and exponential backoff. Attempt `n + 1` waits `initial_delay × multiplier^(n-1)`,
/// capped at `max_delay`, plus up to 20 % jitter, rounded to whole seconds (at least 1 s); every
/// retry waits in the broker's delay cascade.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Runs in all, the first included: 1 means no retry.
    pub max_attempts: u32,
    /// Wait before the first retry.
    #[serde(with = "millis")]
    pub initial_delay: Duration,
    /// Growth of the wait from one retry to the next.
    pub multiplier: f64,
    /// The longest wait.
    #[serde(with = "millis")]
    pub max_delay: Duration,
    /// Add up to 20 % of random delay, so that jobs failing together do not retry together.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    /// One attempt: no retry unless the job type or the request asks for it.
    fn default() -> Self {
        Self::attempts(1)
    }
}

impl RetryPolicy {
    /// `max_attempts` runs with the default backoff: 1 s, doubling, capped at an hour, jittered.
    #[must_use]
    pub fn attempts(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            initial_delay: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(3600),
            jitter: true,
        }
    }

    /// Sets the backoff: the first wait, its growth factor and its cap.
    #[must_use]
    pub fn backoff(mut self, initial_delay: Duration, multiplier: f64, max_delay: Duration) -> Self {
        self.initial_delay = initial_delay;
        self.multiplier = if multiplier.is_finite() { multiplier.max(1.0) } else { 1.0 };
        self.max_delay = max_delay;
        self
    }

    /// Turns jitter on or off.
    #[must_use]
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// Whether a job that just ran its `attempt`-th time (1-based) may run again.
    #[must_use]
    pub fn allows_another(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The wait before attempt `attempt + 1`, after attempt `attempt` (1-based) failed.
    #[must_use]
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = self.initial_delay.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = base.min(self.max_delay.as_secs_f64());
        let jittered = if self.jitter { capped * (1.0 + 0.2 * fastrand::f64()) } else { capped };
        Duration::from_secs(jittered.round().max(1.0) as u64)
    }
}

/// How long something held back because its queue does not exist (a scheduled firing, a batch
/// callback) waits before it is tried again, after its `refusals`-th refusal: 1 s, doubling to a
/// minute.
#[must_use]
pub fn held_retry_delay(refusals: u32) -> Duration {
    RetryPolicy::attempts(u32::MAX)
        .backoff(Duration::from_secs(1), 2.0, Duration::from_secs(60))
        .jitter(false)
        .delay_after(refusals)
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_stays_in_whole_seconds() {
        let policy = RetryPolicy::attempts(10).backoff(Duration::from_secs(1), 2.0, Duration::from_secs(10));
        let waits: Vec<u64> = (1..=6).map(|a| policy.delay_after(a).as_secs()).collect();
        for (wait, base) in waits.iter().zip([1u64, 2, 4, 8, 10, 10]) {
            assert!((base..=base + base / 5 + 1).contains(wait), "{waits:?}");
        }
        assert!(waits.windows(2).take(3).all(|w| w[0] < w[1]), "strictly growing before the cap: {waits:?}");
        let fixed = policy.jitter(false);
        assert_eq!(fixed.delay_after(3), Duration::from_secs(4));
    }

    #[test]
    fn attempts_count_the_first_run() {
        let policy = RetryPolicy::attempts(3);
        assert!(policy.allows_another(1) && policy.allows_another(2) && !policy.allows_another(3));
        assert!(!RetryPolicy::default().allows_another(1));
    }

    #[test]
    fn held_work_is_tried_again_after_one_second_doubling_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|refusals| held_retry_delay(refusals).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
