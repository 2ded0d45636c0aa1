//! A recording client's memory: what it sent instead of sending it, the batches among that, and
//! the handles waiting for results, which a test harness answers when it runs those jobs. See
//! [`crate::Client::recording`].

use crate::batch::{Completion, Record, Snapshot};
use crate::error::{Error, Result};
use crate::ids::BatchId;
use crate::job::Job;
use crate::protocol::{ResultMessage, TaskMessage};
use crate::replies::Waiters;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The reply queue a recording client puts on the jobs it submits; nothing consumes it.
pub(crate) const RECORDING_REPLY_TO: &str = "lepus.recording";

/// A message a recording client would have sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// The queue it was for.
    pub queue: String,
    /// The message, as it would have gone out (its `eta` says when it was due).
    pub message: TaskMessage,
}

impl Sent {
    /// The job's name.
    #[must_use]
    pub fn task(&self) -> &str {
        &self.message.task
    }

    /// When it was due to run: its `eta`, or `None` for at once.
    #[must_use]
    pub fn eta(&self) -> Option<DateTime<Utc>> {
        self.message.eta
    }

    /// Its arguments as the typed input of job `J` (an error if it is another job, or they do
    /// not fit).
    pub fn input<J: Job>(&self) -> Result<J> {
        if self.message.task != J::NAME {
            return Err(Error::InvalidName {
                kind: "job",
                name: self.message.task.clone(),
                reason: "not this job type",
            });
        }
        self.message.arguments.clone().into_input::<J>().map_err(|e| Error::Serde {
            action: "decode",
            what: format!("the input of job {}", J::NAME),
            source: match e {
                crate::protocol::ArgumentsError::Json(e) => e,
                crate::protocol::ArgumentsError::Message(message) => serde::de::Error::custom(message),
            },
        })
    }
}

/// What a recording client has sent, and who waits for which result.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    sent: Mutex<Vec<Sent>>,
    batches: Mutex<HashMap<BatchId, Snapshot>>,
    pub(crate) waiters: Arc<Waiters>,
}

impl Recorder {
    pub(crate) fn record(&self, queue: &str, message: TaskMessage) {
        lock(&self.sent).push(Sent { queue: queue.to_owned(), message });
    }

    pub(crate) fn start_batch(&self, snapshot: Snapshot) {
        lock(&self.batches).insert(snapshot.batch.clone(), snapshot);
    }

    pub(crate) fn sent(&self) -> Vec<Sent> {
        lock(&self.sent).clone()
    }

    pub(crate) fn take_sent(&self) -> Vec<Sent> {
        std::mem::take(&mut *lock(&self.sent))
    }

    pub(crate) fn batch(&self, id: &BatchId) -> Option<Snapshot> {
        lock(&self.batches).get(id).cloned()
    }

    /// A job of a recorded batch has finished: count it, and when it was the last, send the
    /// batch's callback (recorded like any message), once.
    pub(crate) fn batch_job_finished(&self, record: &Record) {
        let callback = {
            let mut batches = lock(&self.batches);
            let Some(snapshot) = batches.get_mut(&record.batch) else { return };
            let Completion::Due { callback } = snapshot.apply_all(std::slice::from_ref(record)) else { return };
            snapshot.complete = true;
            callback
        };
        if let Some(callback) = callback {
            let (queue, message) = *callback;
            self.record(&queue, message);
        }
    }

    /// Hands a job's final result to the handle waiting for it, if any.
    pub(crate) fn answer(&self, correlation_id: &str, result: ResultMessage) {
        self.waiters.deliver(correlation_id, result);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
