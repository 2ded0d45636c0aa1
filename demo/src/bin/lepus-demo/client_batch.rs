//! The client's own batch: [`BATCH_JOBS`] `demo.add` jobs sent with `Client::enqueue_batch`, with
//! `demo.record` as the callback, and its progress (`Client::batch_progress`) shown until complete.

use crate::console::outln;
use crate::progress::{Progress, REDRAW_EVERY};
use crate::record::Record;
use lepus::{Batch, BatchId, BatchProgress, Client, Request};
use lepus_demo::jobs::Add;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Jobs in the batch.
pub(crate) const BATCH_JOBS: usize = 100;

/// The batch once sent: its id and where it stood last.
#[derive(Debug)]
pub(crate) struct ClientBatch {
    pub(crate) id: BatchId,
    pub(crate) progress: BatchProgress,
}

/// Sends the batch to `queue` and shows its progress until it is complete, `timeout` has passed or
/// the demo is interrupted. `Ok(None)` if interrupted before the batch was sent.
pub(crate) async fn run(
    client: &Client,
    queue: &str,
    timeout: Duration,
    interrupted: &CancellationToken,
) -> anyhow::Result<Option<ClientBatch>> {
    let mut batch = Batch::new().callback(Request::new(Record::default()).queue(queue));
    for n in 0..BATCH_JOBS {
        let n = i64::try_from(n).unwrap_or_default();
        batch = batch.job(Request::new(Add { a: n, b: 1000 * n }).queue(queue));
    }
    outln!();
    outln!("Sending a batch of {BATCH_JOBS} demo.add jobs from the client, with demo.record as its callback…");
    let started = Instant::now();
    let id = tokio::select! {
        sent = client.enqueue_batch(batch) => sent?,
        () = interrupted.cancelled() => return Ok(None),
    };
    outln!("  batch {id}");
    let mut shown = Progress::new(BATCH_JOBS as u64, started);
    let progress = loop {
        let progress = client.batch_progress(&id).await?;
        let finished = (progress.done + progress.failed) as u64;
        if progress.complete || started.elapsed() > timeout || interrupted.is_cancelled() {
            shown.finish(finished, progress.failed as u64);
            break progress;
        }
        shown.show(finished, progress.failed as u64);
        tokio::select! {
            () = tokio::time::sleep(REDRAW_EVERY) => {}
            () = interrupted.cancelled() => {}
        }
    };
    Ok(Some(ClientBatch { id, progress }))
}
