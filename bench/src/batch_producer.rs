//! The sending end of `--batches`: `demo.noop` jobs as batches, through `Client::enqueue_batch`,
//! as an application would send them.

use lepus::{Batch, Client, Request};
use lepus_demo::jobs::Noop;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Sends `n` jobs to `queue` in batches of `size`, each with a `demo.noop` callback to the same
/// queue, with about `window` jobs awaiting their confirm at once; returns when all are confirmed.
pub(crate) async fn send_batches(url: &str, queue: &str, n: u64, size: u32, window: usize) -> anyhow::Result<()> {
    let client = Client::connect(url).await?;
    let in_flight = Arc::new(Semaphore::new((window / size as usize).max(1)));
    let mut sending = JoinSet::new();
    for _ in 0..n / u64::from(size) {
        let permit = Arc::clone(&in_flight).acquire_owned().await?;
        let mut batch = Batch::new().callback(Request::new(Noop {}).queue(queue));
        for _ in 0..size {
            batch = batch.job(Request::new(Noop {}).queue(queue));
        }
        let client = client.clone();
        sending.spawn(async move {
            let sent = client.enqueue_batch(batch).await;
            drop(permit);
            sent.map(drop)
        });
        while let Some(done) = sending.try_join_next() {
            done??;
        }
    }
    while let Some(done) = sending.join_next().await {
        done??;
    }
    client.close().await?;
    Ok(())
}
