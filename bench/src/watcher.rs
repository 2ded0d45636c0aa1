//! How a worker process reports progress, the same way for both sides: a thread polls a count of
//! settled deliveries (acked ones) every millisecond and prints `settled <n>` on standard output
//! at once when the count reaches one of its targets, and otherwise at most every 200 ms when it
//! changed; once past its last target it polls every 200 ms only. The orchestrator times phase (a)
//! by the arrival of these lines.

use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, Instant};

const PREFIX: &str = "settled ";
const POLL: Duration = Duration::from_millis(1);
const REPORT_EVERY: Duration = Duration::from_millis(200);

/// Starts the reporting thread; it ends when standard output is closed.
pub(crate) fn spawn(targets: &[u64], settled: impl Fn() -> u64 + Send + 'static) -> std::io::Result<()> {
    let mut targets: VecDeque<u64> = targets.iter().copied().collect();
    targets.make_contiguous().sort_unstable();
    std::thread::Builder::new().name("bench-watcher".into()).spawn(move || watch(targets, &settled)).map(drop)
}

fn watch(mut targets: VecDeque<u64>, settled: &dyn Fn() -> u64) {
    let mut out = std::io::stdout();
    let (mut reported, mut reported_at) = (0, Instant::now());
    loop {
        // Once every target is reached, only progress is left to report: poll lazily, so as not
        // to disturb the phases that follow.
        std::thread::sleep(if targets.is_empty() { REPORT_EVERY } else { POLL });
        let count = settled();
        let mut reached = false;
        while targets.front().is_some_and(|target| count >= *target) {
            targets.pop_front();
            reached = true;
        }
        if reached || (count != reported && reported_at.elapsed() >= REPORT_EVERY) {
            if writeln!(out, "{PREFIX}{count}").and_then(|()| out.flush()).is_err() {
                return;
            }
            (reported, reported_at) = (count, Instant::now());
        }
    }
}

/// The count in a line printed by the thread.
pub(crate) fn parse(line: &str) -> Option<u64> {
    line.strip_prefix(PREFIX)?.trim().parse().ok()
}
