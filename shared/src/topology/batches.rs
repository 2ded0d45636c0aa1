//! The batch queues: a constant three, however many batches there are (see `crate::batch`).
//!
//! - `lepus.batch.records`: quorum, single active consumer. Batch openings, job records and the
//!   trackers' wake-ups, in the order they were sent; one tracker at a time consumes them.
//! - `lepus.batch.state`: quorum. The active tracker's snapshots of the batches it tracks, in the
//!   same transactions as the records they account for; only the tracker reads it, and compacts it.
//! - `lepus.batch.progress`: a stream (`x-max-age` = the worker setting `batch_retention`, and a
//!   byte cap). Every snapshot the tracker makes, appended before the transaction that stores it;
//!   progress is read from here.

use super::{declare_queue, durable, put_str};
use crate::error::{Error, ReplyCode, Result};
use lapin::Channel;
use lapin::types::{AMQPValue, FieldTable};
use std::time::Duration;

/// Batch openings, job records and trackers' wake-ups; one tracker at a time consumes them.
pub const BATCH_RECORDS_QUEUE: &str = "lepus.batch.records";

/// The active tracker's snapshots; read by the tracker alone.
pub const BATCH_STATE_QUEUE: &str = "lepus.batch.state";

/// Every snapshot, kept for the retention: where progress is read.
pub const BATCH_PROGRESS_STREAM: &str = "lepus.batch.progress";

/// How long the progress stream keeps snapshots unless the worker setting `batch_retention` says.
pub const DEFAULT_BATCH_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The progress stream's size cap (`x-max-length-bytes`): old segments go first past it.
const BATCH_PROGRESS_MAX_BYTES: i64 = 2 << 30;

/// The progress stream's segment size: retention drops whole segments, so keep them small.
const BATCH_PROGRESS_SEGMENT_BYTES: i64 = 64 << 20;

/// Declares the queue of batch records (single active consumer).
pub async fn declare_batch_records(channel: &Channel) -> Result<()> {
    let mut args = FieldTable::default();
    put_str(&mut args, "x-queue-type", "quorum");
    args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    declare_queue(channel, BATCH_RECORDS_QUEUE, durable(), args).await
}

/// Declares the tracker's state queue.
pub async fn declare_batch_state(channel: &Channel) -> Result<()> {
    let mut args = FieldTable::default();
    put_str(&mut args, "x-queue-type", "quorum");
    declare_queue(channel, BATCH_STATE_QUEUE, durable(), args).await
}

/// Declares the progress stream, keeping snapshots for `retention` (whole seconds). A stream
/// declared before with another retention is an error that names the setting; the broker closes
/// `channel`.
pub async fn declare_batch_progress(channel: &Channel, retention: Duration) -> Result<()> {
    let mut args = FieldTable::default();
    put_str(&mut args, "x-queue-type", "stream");
    put_str(&mut args, "x-max-age", &max_age(retention));
    args.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(BATCH_PROGRESS_MAX_BYTES));
    args.insert("x-stream-max-segment-size-bytes".into(), AMQPValue::LongLongInt(BATCH_PROGRESS_SEGMENT_BYTES));
    match declare_queue(channel, BATCH_PROGRESS_STREAM, durable(), args).await {
        Err(e) if e.reply_code() == Some(ReplyCode::PreconditionFailed) => {
            Err(Error::BatchRetention { retention: max_age(retention), reason: e.to_string() })
        }
        declared => declared,
    }
}

/// `retention` as the broker's `x-max-age`: whole seconds, `<n>s`.
fn max_age(retention: Duration) -> String {
    format!("{}s", retention.as_secs().max(1))
}
