//! Bulk enqueue: [`Client::enqueue_many`] sends many jobs with their publishes pipelined on the
//! client's confirm channel, and answers for each job on its own.

use super::Client;
use crate::error::Result;
use crate::ids::JobId;
use crate::request::Request;
use chrono::Utc;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

impl Client {
    /// Sends many jobs without asking for their results, with up to
    /// [`ClientOptions::publish_window`](crate::ClientOptions::publish_window) of them awaiting
    /// the broker's confirm at once: far faster than awaiting [`Client::enqueue`] for one job
    /// after the other.
    ///
    /// Returns one result per request, in the order of `requests`, once every job is settled.
    /// A job's result is its id once the broker has confirmed it, as [`Client::enqueue`] returns
    /// it, or the error this job alone met; the other jobs are sent all the same:
    ///
    /// - an invalid request ([`Error::InvalidName`], [`Error::PayloadTooLarge`], a delay beyond
    ///   [`MAX_DELAY`]) is not sent;
    /// - a job for a queue that does not exist is returned by the broker
    ///   ([`Error::Unroutable`]; a delayed one is refused before it is sent);
    /// - a job the broker refused ([`Error::Nacked`], for instance because its queue is full) is
    ///   not enqueued;
    /// - a job whose confirm never came ([`Error::Timeout`], a lost connection) may or may not
    ///   be enqueued; the jobs after it go on a new channel.
    ///
    /// The jobs may reach their queue in another order than that of `requests`, as jobs
    /// enqueued concurrently do.
    ///
    /// ```no_run
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct Resize { image: u32 }
    /// # impl lepus::Job for Resize { const NAME: &'static str = "images.resize"; type Output = (); }
    /// # async fn demo(client: lepus::Client) {
    /// let sent = client.enqueue_many((0..10_000).map(|image| Resize { image })).await;
    /// for (image, result) in sent.iter().enumerate() {
    ///     if let Err(e) = result {
    ///         eprintln!("image {image} was not enqueued: {e}");
    ///     }
    /// }
    /// # }
    /// ```
    ///
    /// [`Error::InvalidName`]: crate::Error::InvalidName
    /// [`Error::PayloadTooLarge`]: crate::Error::PayloadTooLarge
    /// [`Error::Unroutable`]: crate::Error::Unroutable
    /// [`Error::Nacked`]: crate::Error::Nacked
    /// [`Error::Timeout`]: crate::Error::Timeout
    /// [`MAX_DELAY`]: crate::MAX_DELAY
    pub async fn enqueue_many<O, R>(&self, requests: impl IntoIterator<Item = R>) -> Vec<Result<JobId>>
    where
        R: Into<Request<O>>,
    {
        let window = Arc::new(Semaphore::new(self.inner.options.publish_window.max(1)));
        let mut settled = Vec::new();
        let mut sending = JoinSet::new();
        for (index, request) in requests.into_iter().enumerate() {
            let (queue, message) = match request.into().into_message(Utc::now()) {
                Ok(prepared) => prepared,
                Err(e) => {
                    settled.push((index, Err(e)));
                    continue;
                }
            };
            // Checked here, one job at a time (then known), rather than by a window's worth of
            // publishes at once.
            if message.eta.is_some_and(|eta| eta > Utc::now())
                && let Err(e) = self.prepare_delayed(&queue).await
            {
                settled.push((index, Err(e)));
                continue;
            }
            let permit = Arc::clone(&window).acquire_owned().await.expect("the window is never closed");
            let client = self.clone();
            sending.spawn(async move {
                let sent = client.publish(&queue, &message).await.map(|()| message.id);
                drop(permit);
                (index, sent)
            });
            while let Some(done) = sending.try_join_next() {
                settled.push(joined(done));
            }
        }
        while let Some(done) = sending.join_next().await {
            settled.push(joined(done));
        }
        settled.sort_unstable_by_key(|(index, _)| *index);
        settled.into_iter().map(|(_, result)| result).collect()
    }
}

/// A publishing task's outcome; its panic, if it panicked, goes on in the caller.
fn joined(done: std::result::Result<(usize, Result<JobId>), tokio::task::JoinError>) -> (usize, Result<JobId>) {
    done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
