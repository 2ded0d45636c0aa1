//! The client's own batch: [`BATCH_JOBS`] `demo.add` jobs sent with `Client::enqueue_batch`, with
//! `demo.record` as the callback, followed (`Client::batch_progress`) until its callback has run.

use crate::console::{Progress, REDRAW_EVERY, outln};
use crate::schedules::{Record, read_records};
use lepus::{Batch, BatchId, Client, Request};
use lepus_demo::jobs::Add;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Jobs in the batch.
const BATCH_JOBS: usize = 100;

/// Sends the batch `id` to `queue` and shows its progress until its callback has run (the workers
/// write that down in `dir`), `timeout` has passed or the demo is interrupted, then says where it
/// stands; `true` if it completed, every job done, and its callback ran once.
pub(crate) async fn run(
    client: &Client,
    queue: &str,
    id: &BatchId,
    dir: &Path,
    timeout: Duration,
    interrupted: &CancellationToken,
) -> anyhow::Result<bool> {
    let mut batch = Batch::new().id(id.clone()).callback(Request::new(Record::default()).queue(queue));
    for n in 0..BATCH_JOBS as i64 {
        batch = batch.job(Request::new(Add { a: n, b: 1000 * n }).queue(queue));
    }
    outln!();
    outln!("Sending a batch of {BATCH_JOBS} demo.add jobs from the client, with demo.record as its callback…");
    let mut shown = Progress::new(BATCH_JOBS as u64);
    client.enqueue_batch(batch).await?;
    outln!("  batch {id}");
    let (callback, started) = (format!("{id}.callback"), Instant::now());
    let (progress, runs) = loop {
        // The records first: once the callback has run, the progress read next is complete.
        let runs = read_records(dir)?.get(&callback).copied().unwrap_or_default();
        let progress = client.batch_progress(id).await?;
        let (finished, failed) = ((progress.done + progress.failed) as u64, progress.failed as u64);
        if runs > 0 || started.elapsed() > timeout || interrupted.is_cancelled() {
            shown.finish(finished, failed);
            break (progress, runs);
        }
        shown.show(finished, failed);
        tokio::select! {
            () = tokio::time::sleep(REDRAW_EVERY) => {}
            () = interrupted.cancelled() => {}
        }
    };
    let callback = match runs {
        0 => "its callback did not run".to_owned(),
        1 => "its callback ran once".to_owned(),
        n => format!("its callback ran {n} times"),
    };
    let state = if progress.complete { "complete" } else { "not complete" };
    let (total, done, failed, pending) = (progress.total, progress.done, progress.failed, progress.pending);
    outln!("  {total} jobs: {done} done, {failed} failed, {pending} pending; {state}; {callback}");
    Ok(progress.complete && done == BATCH_JOBS && failed == 0 && runs == 1)
}
