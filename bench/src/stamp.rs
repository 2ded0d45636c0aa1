//! `bench.stamp`, the job of the `--delays`, `--scale` and `--memory` runs, and the line by which
//! a worker reports each run of it. The job notes how late it started against the due time its
//! input carries (the job's `eta`, or the moment it was sent), sleeps as long as its input says,
//! then prints `ran <index> <lateness µs>` on the worker's standard output, where the
//! orchestrator timestamps it as it arrives (see [`crate::worker_process`]).

use lepus::Job;
use lepus_worker::{JobContext, JobError};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::time::Duration;

const PREFIX: &str = "ran ";

/// The job's input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stamp {
    /// Which job of the run this is, from 0.
    pub(crate) index: u32,
    /// When it is due, microseconds since the Unix epoch.
    pub(crate) due_us: i64,
    /// How long it sleeps, milliseconds.
    pub(crate) sleep_ms: u32,
}

impl Job for Stamp {
    const NAME: &'static str = "bench.stamp";
    type Output = ();
}

/// One run of the job as the worker reported it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ran {
    pub(crate) index: u32,
    /// How late it started; negative if it ran before it was due.
    pub(crate) late_us: i64,
}

/// The handler the Lepus worker role registers.
pub(crate) async fn run(job: Stamp, _: JobContext) -> Result<(), JobError> {
    let late_us = chrono::Utc::now().timestamp_micros() - job.due_us;
    if job.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(job.sleep_ms.into())).await;
    }
    writeln!(std::io::stdout().lock(), "{PREFIX}{} {late_us}", job.index)
        .map_err(|e| JobError::new(format!("cannot report the run: {e}")))
}

/// The run a line printed by [`run`] reports.
pub(crate) fn parse(line: &str) -> Option<Ran> {
    let (index, late_us) = line.strip_prefix(PREFIX)?.split_once(' ')?;
    Some(Ran { index: index.parse().ok()?, late_us: late_us.trim().parse().ok()? })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_what_the_job_prints() {
        let ran = parse("ran 42 -17").expect("a run");
        assert_eq!((ran.index, ran.late_us), (42, -17));
        assert!(parse("settled 42").is_none());
        assert!(parse("ran x 1").is_none());
    }
}
