//! `test.keyed`, the job of the concurrency-key tests: it takes its key and limit from its input
//! (`Job::concurrency`), sleeps, and returns when it ran (microseconds since the Unix epoch) and
//! where (the worker's pid), so that a test can rebuild how many ran at once per key across
//! worker processes on this machine.

use lepus::{Concurrency, Job};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `test.keyed`: sleeps `sleep_ms`; at most `limit` with the same `key` run at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Keyed {
    /// The concurrency key.
    pub key: String,
    /// How many jobs with `key` may run at once.
    pub limit: u32,
    /// How long the handler sleeps.
    pub sleep_ms: u64,
    /// A file to append `start <µs>` to when the handler starts and `end <µs>` when it ends (a
    /// run cancelled in between writes no end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
}

impl Job for Keyed {
    const NAME: &'static str = "test.keyed";
    type Output = Span;

    fn concurrency(&self) -> Option<Concurrency> {
        Some(Concurrency::new(&self.key, self.limit))
    }
}

/// When a `test.keyed` handler ran, and in which process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Handler start, microseconds since the Unix epoch.
    pub start_us: u64,
    /// Handler end.
    pub end_us: u64,
    /// The worker's process id.
    pub pid: u32,
}

impl Span {
    /// The most spans that overlap at any instant (an end and a start at the same microsecond
    /// do not overlap).
    #[must_use]
    pub fn peak(spans: &[Span]) -> usize {
        let mut edges: Vec<(u64, i32)> =
            spans.iter().flat_map(|span| [(span.start_us, 1), (span.end_us, -1)]).collect();
        edges.sort_unstable(); // at the same time, -1 (an end) sorts before +1 (a start)
        let (mut running, mut peak) = (0i32, 0i32);
        for (_, change) in edges {
            running += change;
            peak = peak.max(running);
        }
        usize::try_from(peak).unwrap_or(0)
    }
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

pub(crate) async fn keyed(job: Keyed) -> anyhow::Result<Span> {
    let start_us = now_us();
    record(job.record.as_deref(), &format!("start {start_us}\n"))?;
    tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
    let end_us = now_us();
    record(job.record.as_deref(), &format!("end {end_us}\n"))?;
    Ok(Span { start_us, end_us, pid: std::process::id() })
}

/// Appends `line` to `file` in one write, if there is a file.
fn record(file: Option<&str>, line: &str) -> anyhow::Result<()> {
    if let Some(file) = file {
        std::fs::OpenOptions::new().create(true).append(true).open(file)?.write_all(line.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Span;

    #[test]
    fn peak_counts_overlaps_and_not_touching_ends() {
        let span = |start_us, end_us| Span { start_us, end_us, pid: 0 };
        assert_eq!(Span::peak(&[]), 0);
        assert_eq!(Span::peak(&[span(0, 10), span(10, 20), span(20, 30)]), 1);
        assert_eq!(Span::peak(&[span(0, 10), span(5, 20), span(6, 7), span(19, 30)]), 3);
    }
}
