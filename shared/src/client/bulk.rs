//! Bulk enqueue: [`Client::enqueue_many`] sends many jobs with their publishes pipelined on the
//! client's confirm channel, and answers for each job on its own.

use super::Client;
use crate::error::Result;
use crate::ids::JobId;
use crate::protocol::TaskMessage;
use crate::request::Request;
use chrono::Utc;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use std::borrow::Cow;

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
        self.send_all(requests.into_iter().map(|request| request.into().into_message(Utc::now()))).await
    }

    /// Sends each message to its queue with up to the publish window awaiting their confirm at
    /// once; one result per message, in order. The queue of a delayed message is made ready
    /// here, one message at a time (it is known from then on), not by a window's worth of
    /// publishes at once.
    pub(super) async fn send_all(&self, messages: impl Iterator<Item = Result<Prepared>>) -> Vec<Result<JobId>> {
        let window = self.inner.options.publish_window.max(1);
        let mut settled = Vec::with_capacity(messages.size_hint().0);
        // Polled only while this awaits the oldest of them, which is all the time once the
        // window is full; each one's result comes out in the order they went in.
        let mut in_flight = FuturesOrdered::new();
        for message in messages {
            let ready = match message {
                Ok((queue, message)) if message.eta.is_some_and(|eta| eta > Utc::now()) => {
                    self.prepare_delayed(&queue).await.map(|()| (queue, message))
                }
                ready => ready,
            };
            in_flight.push_back(self.send_prepared(ready));
            if in_flight.len() >= window
                && let Some(sent) = in_flight.next().await
            {
                settled.push(sent);
            }
        }
        while let Some(sent) = in_flight.next().await {
            settled.push(sent);
        }
        settled
    }

    async fn send_prepared(&self, prepared: Result<Prepared>) -> Result<JobId> {
        let (queue, message) = prepared?;
        self.send_task(&queue, &message).await?;
        Ok(message.id)
    }
}

/// A message and the queue it goes to.
type Prepared = (Cow<'static, str>, TaskMessage);

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn bulk_and_batch_enqueues_can_be_spawned() {
        let client = Client::recording();
        let job = || Request::task("demo.noop", crate::protocol::Arguments::default());
        assert_send(&client.enqueue_many((0..3).map(|_| job())));
        assert_send(&client.enqueue_batch(crate::Batch::new().job(job())));
    }
}
