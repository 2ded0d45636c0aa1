//! The Lepus side of the sending end, written as an application would: `lepus::Client` with
//! `enqueue`, `submit` and `call`, many enqueues in flight at once through a semaphore.

use crate::producer::{Producer, RESULT_TIMEOUT};
use lepus::{Client, Request};
use lepus_demo::jobs::Noop;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// A Lepus client sending `demo.noop` jobs to one queue.
#[derive(Debug)]
pub(crate) struct LepusProducer {
    client: Client,
    queue: String,
    window: usize,
}

impl LepusProducer {
    pub(crate) async fn connect(url: &str, queue: &str, window: usize) -> anyhow::Result<Self> {
        Ok(Self { client: Client::connect(url).await?, queue: queue.to_owned(), window })
    }

    fn request(&self) -> Request<()> {
        Request::new(Noop {}).queue(self.queue.clone())
    }
}

impl Producer for LepusProducer {
    async fn send(&self, n: u64, sent: &Arc<AtomicU64>) -> anyhow::Result<()> {
        let window = Arc::new(Semaphore::new(self.window));
        let mut sending = JoinSet::new();
        for _ in 0..n {
            let permit = Arc::clone(&window).acquire_owned().await?;
            let (client, request, sent) = (self.client.clone(), self.request(), Arc::clone(sent));
            sending.spawn(async move {
                let enqueued = client.enqueue(request).await;
                drop(permit);
                sent.fetch_add(1, Ordering::Relaxed);
                enqueued.map(drop)
            });
            while let Some(done) = sending.try_join_next() {
                done??;
            }
        }
        while let Some(done) = sending.join_next().await {
            done??;
        }
        Ok(())
    }

    async fn send_for_results(
        &self,
        n: u64,
        sent: &Arc<AtomicU64>,
        received: &Arc<AtomicU64>,
    ) -> anyhow::Result<Instant> {
        let window = Arc::new(Semaphore::new(self.window));
        let mut jobs = JoinSet::new();
        let mut last = None;
        let mut finished = |arrived: Instant| last = last.max(Some(arrived));
        for _ in 0..n {
            let permit = Arc::clone(&window).acquire_owned().await?;
            let (client, request) = (self.client.clone(), self.request());
            let (sent, received) = (Arc::clone(sent), Arc::clone(received));
            jobs.spawn(async move {
                let submitted = client.submit(request).await;
                drop(permit);
                let pending = submitted?;
                sent.fetch_add(1, Ordering::Relaxed);
                pending.output(RESULT_TIMEOUT).await?;
                received.fetch_add(1, Ordering::Relaxed);
                Ok::<_, lepus::Error>(Instant::now())
            });
            while let Some(done) = jobs.try_join_next() {
                finished(done??);
            }
        }
        while let Some(done) = jobs.join_next().await {
            finished(done??);
        }
        last.ok_or_else(|| anyhow::anyhow!("no job was sent"))
    }

    async fn call(&self) -> anyhow::Result<()> {
        Ok(self.client.call(self.request(), RESULT_TIMEOUT).await?)
    }

    async fn close(self) -> anyhow::Result<()> {
        Ok(self.client.close().await?)
    }
}
