//! Batches: jobs sent together under one batch id (Celery's `group` header), whose completion is
//! tracked in the broker, with an optional callback job enqueued once when all have finished.
//!
//! Tracking keeps every batch in three queues, however many batches there are (see
//! `topology/batches.rs`): a batch is a few messages, never a queue of its own (thousands of
//! queues, each a Raft group, would bring RabbitMQ down).
//! - Sending a batch first publishes an opening, [`Entry::Open`] with its first [`Snapshot`]
//!   (total, callback, nothing done), to `lepus.batch.records` and waits for its confirm; only
//!   then the jobs, each with `group`, `group_index` and `x-lepus-batch-size`. The queue is FIFO
//!   and no job exists before the opening is in it, so the tracker meets a batch's opening before
//!   any of its records.
//! - A worker that finishes a batch job for good (success, final failure, dead letter, expiry)
//!   publishes a [`Record`] to `lepus.batch.records` before acking the job; records of jobs that
//!   end together share one message ([`Entry::Done`]), so the broker handles far fewer records
//!   than jobs.
//! - One worker at a time tracks (single active consumer of `lepus.batch.records`). It keeps the
//!   live batches in memory (a bitset by job index, so a record repeated after a crash counts
//!   once) and, for each chunk of records, in one AMQP transaction: acks the records, stores the
//!   touched batches' new snapshots in `lepus.batch.state` and appends them to the progress
//!   stream `lepus.batch.progress` (an unfinished batch's at most once a second: a later
//!   transaction appends what was held back, so progress lags by a second at most; an opening
//!   and a completion at once), and publishes the callbacks of the batches that completed. A
//!   callback is published in the same transaction as the snapshot that marks its batch
//!   complete, so it fires exactly once.
//! - A tracker becomes active when the broker first delivers to it. It then loads
//!   `lepus.batch.state` (the highest `seq` per batch) and compacts it in one transaction: acks
//!   all it read, stores the latest snapshot of each unfinished batch again, and appends the
//!   latest of every batch to the stream once more (should a broker crash have split a commit).
//!   It compacts again once the state queue holds more than max(1000, 2 × live batches), so the
//!   queue stays small and nothing stays unacked longer than a compaction takes.
//! - Every tracker publishes an [`Entry::Wake`] when it starts and every 30 s; the active one
//!   acks them with the records. A tracker that becomes active when its predecessor dies thus
//!   gets a delivery soon even if no record ever comes again: it loads the state and retries held
//!   callbacks. Nothing stays unacked between chunks, far from the broker's 30-minute
//!   acknowledgement timeout.
//! - A record for a batch the tracker does not know (finished and compacted away, or never
//!   opened) is acked, counted and logged: never redelivered.
//! - Progress is read from the stream: the snapshot of the batch with the highest `seq`. The
//!   stream keeps snapshots for the worker setting `batch_retention` (default 7 days), so a
//!   finished batch's progress stays readable that long though the state queue forgot it. Stream
//!   appends are part of the tracker's transaction (not a confirmed publish after it): a batch's
//!   completion reaches the stream in the very transaction that enqueues its callback, so no
//!   crash can leave a finished batch looking unfinished there; progress of an unfinished batch
//!   held back and lost in a crash is appended again by the next tracker's load.
//! - The scheduler opens its batches the same way, confirmed, before the transaction of the
//!   firing; a firing tried again opens its batch again, and the tracker ignores an opening of a
//!   batch it knows.
//!
//! Batch ids must be unique within the retention: a reused id reads as the older batch.

use crate::error::{Error, Result};
use crate::ids::{BatchId, JobId};
use crate::protocol::{Arguments, TaskMessage};
use crate::request::Request;
use chrono::{DateTime, Utc};
use lapin::types::AMQPValue;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Header on every job of a tracked batch: the number of jobs in the batch.
pub const SIZE_HEADER: &str = "x-lepus-batch-size";

/// Jobs to send as one batch, and what to run when all have finished.
#[derive(Debug, Default)]
pub struct Batch {
    pub(crate) id: Option<BatchId>,
    pub(crate) jobs: Vec<Request>,
    pub(crate) callback: Option<Request>,
}

impl Batch {
    /// An empty batch with a random id.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `id` instead of a random id (a scheduler uses one derived from the firing).
    #[must_use]
    pub fn id(mut self, id: impl Into<BatchId>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Adds a job.
    #[must_use]
    pub fn job<O>(mut self, request: impl Into<Request<O>>) -> Self {
        self.jobs.push(request.into().erase());
        self
    }

    /// Enqueues `request` once every job has finished, with the keyword argument `batch` added:
    /// the [`BatchSummary`].
    #[must_use]
    pub fn callback<O>(mut self, request: impl Into<Request<O>>) -> Self {
        self.callback = Some(request.into().erase());
        self
    }

    /// How many jobs it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether it holds no job.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// The batch as messages, checked: the first snapshot and each job's queue and message
    /// (ids `<batch>.<index>` unless chosen, with `group`, `group_index` and the size header).
    pub fn prepare(self, now: DateTime<Utc>) -> Result<PreparedBatch> {
        let Batch { id, jobs, callback } = self;
        let id = id.unwrap_or_else(BatchId::random);
        crate::topology::validate_name("batch", id.as_str())?;
        let total = jobs.len();
        let callback = callback
            .map(|request| {
                let (queue, message) = request.into_message(now)?;
                let Arguments { args, kwargs } = message.arguments;
                Ok::<_, Error>(Callback { task: message.task, queue: queue.into_owned(), args, kwargs })
            })
            .transpose()?;
        let mut messages = Vec::with_capacity(total);
        for (index, request) in jobs.into_iter().enumerate() {
            let own_id = request.has_id();
            let (queue, mut message) = request.into_message(now)?;
            if !own_id {
                let job = JobId::from(format!("{id}.{index}"));
                message.correlation_id = Some(job.to_string());
                message.root_id = Some(job.to_string());
                message.id = job;
            }
            message.group = Some(id.to_string());
            message.group_index = Some(index as u64);
            message.extra_headers.insert(SIZE_HEADER.into(), AMQPValue::LongLongInt(total as i64));
            messages.push((queue.into_owned(), message));
        }
        Ok(PreparedBatch { snapshot: Snapshot::new(id.clone(), total, callback), id, messages })
    }
}

/// A batch ready to send: its opening (its first snapshot, to the records queue first), then its
/// jobs.
#[derive(Debug)]
pub struct PreparedBatch {
    /// The batch id.
    pub id: BatchId,
    /// The first snapshot.
    pub snapshot: Snapshot,
    /// Each job's queue and message.
    pub messages: Vec<(String, TaskMessage)>,
}

/// Where a batch stands. `done + failed + pending = total` always holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchProgress {
    /// The batch.
    pub id: BatchId,
    /// Jobs in the batch.
    pub total: usize,
    /// Jobs that succeeded.
    pub done: usize,
    /// Jobs that failed for good (or expired, or were dead-lettered).
    pub failed: usize,
    /// Jobs not finished yet.
    pub pending: usize,
    /// Ids of the failed jobs.
    pub failed_jobs: Vec<JobId>,
    /// Whether every job has finished (and the callback, if any, was enqueued).
    pub complete: bool,
}

/// What the callback job receives as its `batch` keyword argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSummary {
    /// The batch.
    pub id: BatchId,
    /// Jobs in the batch.
    pub total: usize,
    /// Jobs that succeeded.
    pub done: usize,
    /// Jobs that failed for good.
    pub failed: usize,
    /// Ids of the failed jobs.
    pub failed_jobs: Vec<JobId>,
}

/// The callback to enqueue when a batch completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    /// Job name.
    pub task: String,
    /// Queue.
    pub queue: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments (the summary is added as `batch`).
    pub kwargs: serde_json::Map<String, Value>,
}

impl Callback {
    /// The callback's task message for a completed batch: id `<batch>.callback`.
    #[must_use]
    pub fn message(&self, summary: &BatchSummary) -> TaskMessage {
        let mut kwargs = self.kwargs.clone();
        kwargs.insert("batch".into(), serde_json::to_value(summary).unwrap_or(Value::Null));
        let mut message = TaskMessage::new(self.task.clone(), Arguments { args: self.args.clone(), kwargs });
        let id = JobId::from(format!("{}.callback", summary.id));
        message.correlation_id = Some(id.to_string());
        message.root_id = Some(id.to_string());
        message.id = id;
        message
    }
}

/// A failed job in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedJob {
    /// Its index in the batch.
    pub index: usize,
    /// Its id.
    pub id: JobId,
}

/// A batch's state, as the tracker keeps it (in memory, in the state queue and in the progress
/// stream). The one with the highest `seq` is current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The batch.
    pub batch: BatchId,
    /// Version: each update increments it.
    pub seq: u64,
    /// Jobs in the batch.
    pub total: usize,
    /// Finished jobs by index: a bitset, hex-encoded.
    pub finished: String,
    /// Failed jobs.
    pub failed: Vec<FailedJob>,
    /// What to enqueue when complete.
    pub callback: Option<Callback>,
    /// Whether the callback has been enqueued (or there is none and all jobs finished).
    pub complete: bool,
}

/// A job of a batch finished for good: published by the worker to `lepus.batch.records`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The batch.
    pub batch: BatchId,
    /// The job's index in the batch.
    pub index: usize,
    /// The job's id.
    pub job: JobId,
    /// Whether it succeeded.
    pub ok: bool,
}

impl Record {
    /// The record of `message` finishing, if it is a job of a tracked batch.
    #[must_use]
    pub fn of(message: &TaskMessage, ok: bool) -> Option<Self> {
        if !message.extra_headers.contains_key(SIZE_HEADER) {
            return None;
        }
        Some(Self {
            batch: BatchId::from(message.group.clone()?),
            index: usize::try_from(message.group_index?).ok()?,
            job: message.id.clone(),
            ok,
        })
    }
}

/// What `lepus.batch.records` carries, in the order it was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Entry {
    /// A batch was sent: its first snapshot. Comes before any of its records.
    Open {
        /// The first snapshot.
        open: Snapshot,
    },
    /// A tracker is alive (named by its node): wakes the active one, which may have just become so.
    Wake {
        /// The tracker's node name.
        wake: String,
    },
    /// Jobs of batches finished for good: one worker's records, gathered into one message.
    Done {
        /// The records.
        done: Vec<Record>,
    },
}

impl Entry {
    /// Encodes for `lepus.batch.records`.
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(Error::serde("encode", "a batch record"))
    }
}

/// Whether a batch is due to complete, once records are applied ([`Snapshot::apply_all`]).
#[derive(Debug, PartialEq)]
pub enum Completion {
    /// Jobs are still running, or the batch completed before.
    NotYet,
    /// The last job is in: send the callback, if any, to its queue (`(queue, message)`), then mark
    /// the snapshot complete.
    Due {
        /// The callback and its queue.
        callback: Option<Box<(String, TaskMessage)>>,
    },
}

impl Snapshot {
    /// The first snapshot of a new batch.
    #[must_use]
    pub fn new(batch: BatchId, total: usize, callback: Option<Callback>) -> Self {
        Self {
            batch,
            seq: 0,
            total,
            finished: hex(&vec![0; total.div_ceil(8)]),
            failed: Vec::new(),
            callback,
            complete: total == 0,
        }
    }

    /// Applies a record; returns whether it changed anything (a repeated record does not).
    pub fn apply(&mut self, record: &Record) -> bool {
        let mut bits = unhex(&self.finished);
        let (byte, bit) = (record.index / 8, 1u8 << (record.index % 8));
        if record.index >= self.total || byte >= bits.len() || bits[byte] & bit != 0 {
            return false;
        }
        bits[byte] |= bit;
        self.finished = hex(&bits);
        if !record.ok {
            self.failed.push(FailedJob { index: record.index, id: record.job.clone() });
        }
        true
    }

    /// Applies `records` and says whether the batch is now due to complete. A complete snapshot
    /// is never due again; a finished one not yet marked complete (its callback could not be
    /// sent) is due again without a new record.
    pub fn apply_all(&mut self, records: &[Record]) -> Completion {
        for record in records {
            self.apply(record);
        }
        if self.complete || !self.all_finished() {
            return Completion::NotYet;
        }
        let summary = self.summary();
        let callback =
            self.callback.as_ref().map(|callback| Box::new((callback.queue.clone(), callback.message(&summary))));
        Completion::Due { callback }
    }

    /// How many jobs have finished.
    #[must_use]
    pub fn finished(&self) -> usize {
        unhex(&self.finished).iter().map(|b| b.count_ones() as usize).sum()
    }

    /// Whether every job has finished.
    #[must_use]
    pub fn all_finished(&self) -> bool {
        self.finished() == self.total
    }

    /// The progress this snapshot describes.
    #[must_use]
    pub fn progress(&self) -> BatchProgress {
        let finished = self.finished();
        BatchProgress {
            id: self.batch.clone(),
            total: self.total,
            done: finished - self.failed.len(),
            failed: self.failed.len(),
            pending: self.total - finished,
            failed_jobs: self.failed.iter().map(|f| f.id.clone()).collect(),
            complete: self.complete,
        }
    }

    /// The summary handed to the callback.
    #[must_use]
    pub fn summary(&self) -> BatchSummary {
        let p = self.progress();
        BatchSummary { id: p.id, total: p.total, done: p.done, failed: p.failed, failed_jobs: p.failed_jobs }
    }

    /// Encodes for the state queue and the progress stream.
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(Error::serde("encode", "a batch snapshot"))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(index: usize, ok: bool) -> Record {
        Record { batch: BatchId::from("b"), index, job: JobId::from(format!("b.{index}")), ok }
    }

    #[test]
    fn records_count_once_and_progress_adds_up() {
        let mut snapshot = Snapshot::new(BatchId::from("b"), 10, None);
        assert!(snapshot.apply(&record(0, true)));
        assert!(snapshot.apply(&record(9, false)));
        assert!(!snapshot.apply(&record(0, true)), "a repeated record changes nothing");
        assert!(!snapshot.apply(&record(10, true)), "out of range");
        let p = snapshot.progress();
        assert_eq!((p.done, p.failed, p.pending), (1, 1, 8));
        assert_eq!(p.done + p.failed + p.pending, p.total);
        assert_eq!(p.failed_jobs, [JobId::from("b.9")]);
        for i in 1..9 {
            snapshot.apply(&record(i, true));
        }
        assert!(snapshot.all_finished());
    }

    #[test]
    fn the_callback_gets_the_summary_as_a_keyword_argument() {
        let callback = Callback { task: "t".into(), queue: "q".into(), args: vec![], kwargs: serde_json::Map::new() };
        let mut snapshot = Snapshot::new(BatchId::from("b"), 1, Some(callback.clone()));
        snapshot.apply(&record(0, false));
        let message = callback.message(&snapshot.summary());
        assert_eq!(message.id.as_str(), "b.callback");
        assert_eq!(message.arguments.kwargs["batch"]["failed"], 1);
        assert_eq!(message.arguments.kwargs["batch"]["failed_jobs"][0], "b.0");
    }

    #[test]
    fn entries_of_each_kind_decode_as_themselves() {
        let entries = [
            Entry::Open { open: with_callback(3) },
            Entry::Wake { wake: "lepus@host-1".into() },
            Entry::Done { done: vec![record(2, false), record(0, true)] },
        ];
        for entry in entries {
            let back: Entry = serde_json::from_slice(&entry.encode().expect("encodes")).expect("decodes");
            assert_eq!(back, entry);
        }
    }

    #[test]
    fn snapshots_survive_json() {
        let mut snapshot = Snapshot::new(BatchId::from("b"), 20, None);
        snapshot.apply(&record(13, true));
        let back: Snapshot = serde_json::from_slice(&snapshot.encode().expect("encodes")).expect("decodes");
        assert_eq!(back, snapshot);
        assert_eq!(back.finished(), 1);
    }

    fn with_callback(total: usize) -> Snapshot {
        let callback =
            Callback { task: "report".into(), queue: "reports".into(), args: vec![], kwargs: Default::default() };
        Snapshot::new(BatchId::from("b"), total, Some(callback))
    }

    #[test]
    fn the_callback_is_due_once_when_the_last_job_is_in() {
        let mut batch = with_callback(3);
        assert_eq!(batch.apply_all(&[record(2, true), record(0, true)]), Completion::NotYet);
        assert_eq!(batch.apply_all(&[record(2, true)]), Completion::NotYet, "a repeated record changes nothing");
        let Completion::Due { callback: Some(callback) } = batch.apply_all(&[record(1, false)]) else {
            panic!("the batch completes with its callback")
        };
        let (queue, message) = *callback;
        assert_eq!((queue.as_str(), message.id.as_str(), message.task.as_str()), ("reports", "b.callback", "report"));
        assert_eq!(message.arguments.kwargs["batch"]["done"], 2);
        assert_eq!(message.arguments.kwargs["batch"]["failed_jobs"], serde_json::json!(["b.1"]));
        batch.complete = true;
        assert_eq!(batch.apply_all(&[record(1, false)]), Completion::NotYet, "a completed batch is never due again");
    }

    #[test]
    fn a_batch_without_callback_is_due_without_one_and_an_empty_batch_is_complete_at_once() {
        let mut batch = Snapshot::new(BatchId::from("b"), 1, None);
        assert_eq!(batch.apply_all(&[record(0, true)]), Completion::Due { callback: None });
        let mut empty = with_callback(0);
        assert!(empty.complete);
        assert_eq!(empty.apply_all(&[]), Completion::NotYet);
    }

    #[test]
    fn a_finished_batch_not_marked_complete_is_due_again_with_no_new_record() {
        let mut batch = with_callback(1);
        assert!(matches!(batch.apply_all(&[record(0, true)]), Completion::Due { callback: Some(_) }));
        // Its callback's queue was missing: the snapshot was stored finished, not complete.
        assert!(matches!(batch.apply_all(&[]), Completion::Due { callback: Some(_) }), "the retry asks again");
    }
}
