//! Progress of the running phase, on standard error: on a terminal, one line rewritten four
//! times a second with its counters; otherwise a line when the phase starts. Either way a line
//! with the outcome when it ends.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

/// A counter to show, by name.
pub(crate) type Counter = (&'static str, Arc<AtomicU64>);

/// The display of one phase; ends with [`Progress::finish`] (or silently when dropped).
#[derive(Debug)]
pub(crate) struct Progress {
    label: String,
    ticker: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts showing `counters`, each out of `total`.
    pub(crate) fn start(label: String, total: u64, counters: Vec<Counter>) -> Self {
        let ticker = if std::io::stderr().is_terminal() {
            Some(tokio::spawn(tick(label.clone(), total, counters)))
        } else {
            eprintln!("{label} …");
            None
        };
        Self { label, ticker }
    }

    /// Replaces the progress line with the phase's outcome.
    pub(crate) fn finish(mut self, outcome: &str) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
            eprint!("\r\x1b[2K");
        }
        eprintln!("{}: {outcome}", self.label);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
            eprintln!();
        }
    }
}

async fn tick(label: String, total: u64, counters: Vec<Counter>) {
    let mut every = tokio::time::interval(Duration::from_millis(250));
    loop {
        every.tick().await;
        let shown: Vec<String> =
            counters.iter().map(|(name, count)| format!("{name} {}/{total}", count.load(Ordering::Relaxed))).collect();
        eprint!("\r\x1b[2K{label}: {}", shown.join(", "));
    }
}
