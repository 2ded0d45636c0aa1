//! [`Tally`]: what came back for the jobs so far, counted as results arrive.

use crate::plan::Planned;
use lepus::protocol::{ResultMessage, Status};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// How many problems are kept to show as examples.
const EXAMPLES: usize = 5;

/// The counts of the results received so far.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    /// Jobs whose result arrived, or that will never get one.
    pub(crate) done: u64,
    /// Results with status `SUCCESS`.
    pub(crate) succeeded: u64,
    /// Results with another final status.
    pub(crate) failed: u64,
    /// Failures whose exception carries a non-empty message.
    pub(crate) failures_with_message: u64,
    /// Results that differ from what the job must answer.
    pub(crate) wrong: u64,
    /// Jobs that got no result (submit failed, or the result did not come in time).
    pub(crate) lost: u64,
    /// Jobs run, by the worker that ran them (`host:pid`).
    pub(crate) by_worker: BTreeMap<String, u64>,
    /// The first few problems, described.
    pub(crate) examples: Vec<String>,
}

impl Tally {
    /// Whether every job got the result it must get.
    pub(crate) fn all_correct(&self, total: u64) -> bool {
        self.done == total && self.wrong == 0 && self.lost == 0
    }

    fn record(&mut self, job: &Planned, outcome: lepus::Result<ResultMessage>) {
        self.done += 1;
        let result = match outcome {
            Ok(result) => result,
            Err(e) => {
                self.lost += 1;
                self.example(format!("{} got no result: {e}", job.name()));
                return;
            }
        };
        let worker = result.worker.clone().unwrap_or_else(|| "(unnamed worker)".to_owned());
        *self.by_worker.entry(worker).or_default() += 1;
        if result.status == Status::Success {
            self.succeeded += 1;
        } else {
            self.failed += 1;
            if result.exception().is_some_and(|e| !e.message().is_empty()) {
                self.failures_with_message += 1;
            }
        }
        if let Err(problem) = job.check(&result) {
            self.wrong += 1;
            self.example(problem);
        }
    }

    fn example(&mut self, problem: String) {
        if self.examples.len() < EXAMPLES {
            self.examples.push(problem);
        }
    }
}

/// A [`Tally`] shared by the tasks awaiting results and the progress display.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedTally(Arc<Mutex<Tally>>);

impl SharedTally {
    /// Counts one job's outcome.
    pub(crate) fn record(&self, job: &Planned, outcome: lepus::Result<ResultMessage>) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).record(job, outcome);
    }

    /// A copy of the counts so far.
    pub(crate) fn snapshot(&self) -> Tally {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Jobs done and jobs failed so far, without copying the rest.
    pub(crate) fn progress(&self) -> (u64, u64) {
        let tally = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (tally.done, tally.failed + tally.lost)
    }
}
