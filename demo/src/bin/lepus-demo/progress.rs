//! The progress display on standard error: one line rewritten in place on a terminal, a plain line
//! every second otherwise (a log file, a CI job).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the in-place line is redrawn, and how often a plain line is printed.
pub(crate) const REDRAW_EVERY: Duration = Duration::from_millis(200);
const PLAIN_EVERY: Duration = Duration::from_secs(1);

/// Draws the progress of `total` jobs started at `started`.
#[derive(Debug)]
pub(crate) struct Progress {
    total: u64,
    started: Instant,
    in_place: bool,
    last_plain: Option<Instant>,
}

impl Progress {
    pub(crate) fn new(total: u64, started: Instant) -> Self {
        Self { total, started, in_place: std::io::stderr().is_terminal(), last_plain: None }
    }

    /// Shows the counts now (a plain line only if a second has passed since the last one).
    pub(crate) fn show(&mut self, done: u64, failed: u64) {
        if self.in_place {
            self.write(&format!("\r{}\x1b[K", self.line(done, failed)));
        } else if self.last_plain.is_none_or(|last| last.elapsed() >= PLAIN_EVERY) {
            self.last_plain = Some(Instant::now());
            self.write(&format!("{}\n", self.line(done, failed)));
        }
    }

    /// Shows the final counts and ends the line.
    pub(crate) fn finish(&mut self, done: u64, failed: u64) {
        let line = self.line(done, failed);
        self.write(&if self.in_place { format!("\r{line}\x1b[K\n") } else { format!("{line}\n") });
    }

    fn line(&self, done: u64, failed: u64) -> String {
        let rate = per_second(done, self.started.elapsed());
        format!("  {done:>width$}/{} done   {failed} failed   {rate:.0} jobs/s", self.total, width = digits(self.total))
    }

    fn write(&self, text: &str) {
        let mut stderr = std::io::stderr().lock();
        drop(stderr.write_all(text.as_bytes()).and_then(|()| stderr.flush()));
    }
}

/// `count` per second over `elapsed`.
pub(crate) fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 { count as f64 / seconds } else { 0.0 }
}

fn digits(n: u64) -> usize {
    n.to_string().len()
}
