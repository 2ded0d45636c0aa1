//! The one reconnect policy: how a worker's consumers, its batch tracker, a client's reply
//! consumer and a scheduler replica get back to the broker after losing it.
//!
//! The first attempt is made at once; after a failure the next waits 100 ms, and the waits double
//! up to [`MAX_DELAY`], each with up to as much again of random jitter so that many processes
//! that lost the broker together do not knock together. However long the broker was away, one
//! that accepts connections again is found within about a second.

use backon::{ExponentialBuilder, Retryable};
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The wait after the first failed attempt.
pub(crate) const FIRST_DELAY: Duration = Duration::from_millis(100);

/// The longest wait between attempts before jitter, which adds up to as much again.
pub(crate) const MAX_DELAY: Duration = Duration::from_millis(500);

/// Runs `attempt` until it succeeds, waiting by the policy between failures, each logged as a
/// warning naming `what`. `None` if `stop` is cancelled first.
pub async fn reconnect<T, E, F, Fut>(what: &str, stop: &CancellationToken, attempt: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Display,
{
    let policy = ExponentialBuilder::new()
        .with_min_delay(FIRST_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    let retrying = attempt
        .retry(policy)
        .sleep(tokio::time::sleep)
        .notify(|error: &E, wait: Duration| tracing::warn!(what, %error, retry_in = ?wait, "cannot reach the broker"));
    tokio::select! {
        () = stop.cancelled() => None,
        done = retrying => done.ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn waits_grow_to_the_cap_and_never_past_twice_the_cap() {
        let attempts = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let mut at = Vec::new();
        let done = reconnect("test", &CancellationToken::new(), || {
            at.push(started.elapsed());
            let n = attempts.fetch_add(1, Ordering::Relaxed);
            async move { if n < 12 { Err("refused") } else { Ok(n) } }
        })
        .await;
        assert_eq!(done, Some(12));
        assert_eq!(at[0], Duration::ZERO, "the first attempt is immediate");
        let waits: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(waits.iter().all(|w| *w >= FIRST_DELAY && *w <= 2 * MAX_DELAY), "{waits:?}");
        assert!(waits[6..].iter().all(|w| *w >= MAX_DELAY), "capped waits stay at the cap: {waits:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_attempts() {
        let stop = CancellationToken::new();
        let stopping = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            stopping.cancel();
        });
        let done: Option<()> = reconnect("test", &stop, || async { Err::<(), _>("refused") }).await;
        assert_eq!(done, None);
    }
}
