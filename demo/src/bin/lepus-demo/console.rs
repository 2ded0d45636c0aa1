//! The terminal: `outln!` and `errln!`, which are `println!` and `eprintln!` that ignore a closed
//! stream (`lepus-demo | head`, so that a reader going away cannot skip the clean-up), and the
//! [`Progress`] line on standard error: rewritten in place on a terminal, a plain line every
//! second otherwise (a log file, a CI job).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Writes one line to standard output, ignoring errors.
macro_rules! outln {
    () => { $crate::console::write_line(false, format_args!("")) };
    ($($arg:tt)*) => { $crate::console::write_line(false, format_args!($($arg)*)) };
}

/// Writes one line to standard error, ignoring errors.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::console::write_line(true, format_args!($($arg)*)) };
}

pub(crate) use {errln, outln};

/// Writes `line` and a line feed to standard error (`to_stderr`) or standard output.
pub(crate) fn write_line(to_stderr: bool, line: std::fmt::Arguments<'_>) {
    if to_stderr {
        drop(writeln!(std::io::stderr().lock(), "{line}"));
    } else {
        drop(writeln!(std::io::stdout().lock(), "{line}"));
    }
}

/// How often the progress is redrawn (in place) or printed (plain).
pub(crate) const REDRAW_EVERY: Duration = Duration::from_millis(200);
const PLAIN_EVERY: Duration = Duration::from_secs(1);

/// The progress of `total` jobs started at `started`.
#[derive(Debug)]
pub(crate) struct Progress {
    total: u64,
    started: Instant,
    in_place: bool,
    last_plain: Option<Instant>,
}

impl Progress {
    pub(crate) fn new(total: u64) -> Self {
        Self { total, started: Instant::now(), in_place: std::io::stderr().is_terminal(), last_plain: None }
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
    pub(crate) fn finish(&self, done: u64, failed: u64) {
        let line = self.line(done, failed);
        self.write(&if self.in_place { format!("\r{line}\x1b[K\n") } else { format!("{line}\n") });
    }

    fn line(&self, done: u64, failed: u64) -> String {
        let (rate, width) = (per_second(done, self.started.elapsed()), self.total.to_string().len());
        format!("  {done:>width$}/{} done   {failed} failed   {rate:.0} jobs/s", self.total)
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
