//! The client: enqueue jobs, call them and await their typed results.

mod bulk;
mod options;
mod pending;
mod progress;
mod publish;
pub(crate) mod recorder;
mod unique;

pub use options::ClientOptions;
pub use pending::Pending;
pub use recorder::Sent;

use crate::batch::{Batch, BatchProgress, Entry, PreparedBatch, Record};
use crate::broker::{Broker, Connector};
use crate::dead_letter::DeadLetters;
use crate::error::{Error, Result};
use crate::ids::BatchId;
use crate::ids::JobId;
use crate::protocol::headers::persistent_json;
use crate::protocol::{ResultMessage, TaskMessage};
use crate::publisher::{Outgoing, Publisher};
use crate::replies::Replies;
use crate::request::Request;
use crate::tls::Tls;
use crate::topology::{self, WorkQueue};
use chrono::{DateTime, TimeZone, Utc};
use progress::SentBatches;
use recorder::Recorder;
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::OnceCell;
use tracing::Instrument;

/// A handle to send jobs and receive their results. Cheap to clone; clones share the broker
/// connections, the confirm channel and the reply queue.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    broker: Broker,
    publisher: Arc<Publisher>,
    replies: OnceCell<Replies>,
    /// Set once this client has declared the delay cascade.
    cascade: OnceCell<()>,
    /// Set once this client has declared the batch records queue.
    batch_records: OnceCell<()>,
    /// Set once this client has declared the event exchanges and stream.
    events: OnceCell<()>,
    /// Batches this client sent: their progress is read from their send time on.
    sent_batches: Mutex<SentBatches>,
    /// Queues known to exist, for delayed publishes (which the broker cannot refuse as
    /// unroutable: the cascade always takes them).
    known_queues: Mutex<HashSet<String>>,
    options: ClientOptions,
    /// Set for a recording client, which sends nothing.
    recorder: Option<Recorder>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("id", &self.inner.id).field("broker", &self.inner.broker).finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the broker at `url` with default options.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, ClientOptions::default()).await
    }

    /// Connects to the broker at `url`.
    pub async fn connect_with(url: &str, options: ClientOptions) -> Result<Self> {
        let connector = Connector::new(url, &options.tls, &options.connection_name)?.order(options.url_order);
        let broker = Broker::connect_through(connector, 16).await?;
        Ok(Self::with_broker(broker, options))
    }

    /// A client on an existing connection pool.
    #[must_use]
    pub fn with_broker(broker: Broker, options: ClientOptions) -> Self {
        let publisher = Arc::new(Publisher::new(broker.clone(), options.broker_timeout));
        let id = uuid::Uuid::new_v4().to_string();
        let known_queues = Mutex::default();
        let (replies, cascade, batch_records, recorder) = (OnceCell::new(), OnceCell::new(), OnceCell::new(), None);
        let events = OnceCell::new();
        let sent_batches = Mutex::default();
        let inner = Inner {
            id,
            broker,
            publisher,
            replies,
            cascade,
            batch_records,
            events,
            sent_batches,
            known_queues,
            options,
            recorder,
        };
        Self { inner: Arc::new(inner) }
    }

    /// A client that sends nothing and needs no broker: it records every job it would have sent
    /// ([`Client::sent`]), to test handlers and flows. A batch sent through it completes, and its
    /// callback is recorded, as the jobs are run by a test harness
    /// (`lepus_worker::testing::TestWorker`), which also answers the jobs it submitted.
    #[must_use]
    pub fn recording() -> Self {
        let placeholder = "amqp://guest:guest@recording.invalid/%2f";
        let broker = Connector::new(placeholder, &Tls::default(), "lepus-recording")
            .and_then(|connector| Broker::lazy(connector, 1))
            .expect("the recording client's placeholder URL parses");
        let mut client = Self::with_broker(broker, ClientOptions::default());
        if let Some(inner) = Arc::get_mut(&mut client.inner) {
            inner.recorder = Some(Recorder::default());
        }
        client
    }

    /// Whether this is a recording client ([`Client::recording`]).
    #[must_use]
    pub fn is_recording(&self) -> bool {
        self.inner.recorder.is_some()
    }

    /// What a recording client has sent so far, oldest first (nothing for a connected client).
    #[must_use]
    pub fn sent(&self) -> Vec<Sent> {
        self.inner.recorder.as_ref().map(Recorder::sent).unwrap_or_default()
    }

    /// Like [`Client::sent`], and forgets it.
    #[must_use]
    pub fn take_sent(&self) -> Vec<Sent> {
        self.inner.recorder.as_ref().map(Recorder::take_sent).unwrap_or_default()
    }

    /// The broker connections, for application code that shares them.
    #[must_use]
    pub fn broker(&self) -> &Broker {
        &self.inner.broker
    }

    /// Sends a job without asking for its result. Returns its id once the broker has confirmed
    /// the message; fails if no queue of that name exists.
    /// A unique request ([`Request::unique`]) first takes its key's lock: if another job holds
    /// the key, nothing is sent, and the holder's id (or [`Error::Duplicate`]) is returned.
    pub async fn enqueue<O>(&self, request: impl Into<Request<O>>) -> Result<JobId> {
        let mut request = request.into();
        let unique = request.take_unique();
        let (queue, mut message) = request.into_message(Utc::now())?;
        if let Some(unique) = unique {
            return self.send_unique(&queue, &mut message, &unique).await?.enqueued(message.id, &unique);
        }
        self.send_task(&queue, &message).await?;
        Ok(message.id)
    }

    /// Sends a job to run no earlier than `delay` from now. The broker holds it until then.
    pub async fn enqueue_in<O>(&self, request: impl Into<Request<O>>, delay: Duration) -> Result<JobId> {
        self.enqueue(request.into().delay(delay)).await
    }

    /// Sends a job to run no earlier than `at`, in any time zone.
    pub async fn enqueue_at<O, Tz: TimeZone>(&self, request: impl Into<Request<O>>, at: DateTime<Tz>) -> Result<JobId> {
        self.enqueue(request.into().at(at)).await
    }

    /// Sends a job and returns a handle to await its result later (for a chain, the result of its
    /// last step). A unique request whose key another job holds fails with
    /// [`Error::Duplicate`]: that job's result goes to its own sender.
    pub async fn submit<O>(&self, request: impl Into<Request<O>>) -> Result<Pending<O>> {
        let mut request = request.into();
        let unique = request.take_unique();
        let awaited = request.awaited_id();
        let (queue, mut message) = request.into_message(Utc::now())?;
        let (reply_to, waiters) = match &self.inner.recorder {
            Some(recorder) => (recorder::RECORDING_REPLY_TO, Arc::clone(&recorder.waiters)),
            None => {
                let replies = self.replies().await?;
                (replies.queue(), Arc::clone(replies.waiters()))
            }
        };
        message.reply_to = Some(reply_to.to_owned());
        // A chain's handle awaits its last step: its result comes with that step's id.
        let awaited = awaited.unwrap_or_else(|| message.id.clone());
        let correlation_id = if awaited == message.id {
            message.correlation_id.clone().unwrap_or_else(|| message.id.to_string())
        } else {
            awaited.to_string()
        };
        let receiver = waiters.register(&correlation_id);
        let pending = Pending::new(awaited, correlation_id, receiver, waiters, self.inner.options.result_timeout);
        if let Some(unique) = unique.map(|unique| unique.or_error()) {
            self.send_unique(&queue, &mut message, &unique).await?.enqueued(message.id.clone(), &unique)?;
            return Ok(pending);
        }
        self.send_task(&queue, &message).await?;
        Ok(pending)
    }

    /// Sends a job and waits up to `timeout` for its typed output.
    pub async fn call<O: DeserializeOwned>(&self, request: impl Into<Request<O>>, timeout: Duration) -> Result<O> {
        self.submit(request).await?.output(timeout).await
    }

    /// Declares a work queue (and its dead-letter queue), as a worker does at start-up.
    pub async fn declare_queue(&self, queue: &WorkQueue) -> Result<()> {
        if self.is_recording() {
            return Ok(());
        }
        let channel = self.inner.broker.channel().await?;
        queue.declare(&channel).await?;
        drop(channel.close(200, "declared".into()).await);
        Ok(())
    }

    /// Sends a batch: its opening (the first snapshot) to the batch records queue first, then
    /// every job, up to [`ClientOptions::publish_window`] awaiting their confirm at once. Returns the batch id once the broker has confirmed them all.
    /// Fails before sending anything if a job is invalid; if the broker fails midway, the jobs
    /// sent so far run and the batch never completes.
    pub async fn enqueue_batch(&self, batch: Batch) -> Result<BatchId> {
        let sent_at = Utc::now();
        let PreparedBatch { id, snapshot, messages } = batch.prepare(sent_at)?;
        if let Some(recorder) = &self.inner.recorder {
            recorder.start_batch(snapshot);
            for (queue, message) in messages {
                recorder.record(&queue, message);
            }
            return Ok(id);
        }
        let inner = &self.inner;
        inner
            .batch_records
            .get_or_try_init(|| async {
                let channel = inner.broker.channel().await?;
                topology::declare_batch_records(&channel).await?;
                drop(channel.close(200, "declared".into()).await);
                Ok::<_, Error>(())
            })
            .await?;
        let opening = Entry::Open { open: snapshot.clone() }.encode()?;
        let routing_key = topology::BATCH_RECORDS_QUEUE;
        inner
            .publisher
            .publish(Outgoing { exchange: "", routing_key, body: &opening, properties: persistent_json() })
            .await?;
        inner.sent_batches.lock().unwrap_or_else(PoisonError::into_inner).remember(snapshot, sent_at);

        let messages = messages.into_iter().map(|(queue, message)| Ok((queue.into(), message)));
        for sent in self.send_all(messages).await {
            sent?;
        }
        Ok(id)
    }

    /// Where batch `id` stands: its latest snapshot in the progress stream, which keeps finished
    /// batches for the workers' `batch_retention` (default 7 days). A batch this client sent is
    /// read from its send time on, and known (all pending) before a tracker has taken it; any
    /// other is looked for in widening windows back from now (for a batch days old, days of the
    /// stream are read: [`Client::batch_progress_since`] reads less). [`Error::UnknownBatch`] if
    /// there is no trace of it.
    pub async fn batch_progress(&self, id: &BatchId) -> Result<BatchProgress> {
        self.progress(id, None).await
    }

    /// Like [`Client::batch_progress`], for a batch sent (by any client) no earlier than `since`:
    /// the stream is read from a few minutes before then only.
    pub async fn batch_progress_since(&self, id: &BatchId, since: DateTime<Utc>) -> Result<BatchProgress> {
        self.progress(id, Some(since)).await
    }

    async fn progress(&self, id: &BatchId, since: Option<DateTime<Utc>>) -> Result<BatchProgress> {
        if let Some(recorder) = &self.inner.recorder {
            return recorder
                .batch(id)
                .map(|snapshot| snapshot.progress())
                .ok_or_else(|| Error::UnknownBatch(id.clone()));
        }
        let inner = &self.inner;
        let sent = inner.sent_batches.lock().unwrap_or_else(PoisonError::into_inner).get(id);
        let from = since.or(sent.as_ref().map(|(at, _)| *at));
        let patience = inner.options.broker_timeout;
        let latest = progress::latest(&inner.broker, &inner.publisher, id, from, patience).await?;
        match (latest, sent) {
            (Some(snapshot), _) => Ok(snapshot.progress()),
            (None, Some((_, first))) => Ok(first.progress()),
            (None, None) => Err(Error::UnknownBatch(id.clone())),
        }
    }

    /// The dead letters of work queue `queue`: list, requeue, purge.
    pub fn dead_letters(&self, queue: &str) -> Result<DeadLetters> {
        Ok(DeadLetters::new(self.inner.broker.clone(), Arc::clone(&self.inner.publisher), WorkQueue::new(queue)?))
    }

    /// Stops receiving results and deletes this client's reply queue. Pending results fail with
    /// [`Error::Closed`].
    pub async fn close(&self) -> Result<()> {
        if self.is_recording() {
            return Ok(());
        }
        match self.inner.replies.get() {
            Some(replies) => replies.close().await,
            None => Ok(()),
        }
    }

    async fn send_task(&self, queue: &str, message: &TaskMessage) -> Result<()> {
        let (body, properties) = message.encode().map_err(Error::serde("encode", format!("job {}", message.task)))?;
        let limit = self.inner.options.max_payload;
        if body.len() > limit {
            return Err(Error::PayloadTooLarge { size: body.len(), limit });
        }
        let span = tracing::debug_span!("enqueue", job.id = %message.id, job.name = %message.task, queue);
        let delay = message.eta.and_then(|eta| (eta - Utc::now()).to_std().ok()).unwrap_or_default();
        let route = topology::delayed_route(queue, delay)?;
        if let Some(recorder) = &self.inner.recorder {
            recorder.record(queue, message.clone());
            return Ok(());
        }
        match route {
            None => {
                let outgoing = Outgoing { exchange: "", routing_key: queue, body: &body, properties };
                self.inner.publisher.publish(outgoing).instrument(span).await
            }
            Some(route) => {
                self.prepare_delayed(queue).await?;
                let outgoing =
                    Outgoing { exchange: route.exchange, routing_key: &route.routing_key, body: &body, properties };
                self.inner.publisher.publish(outgoing).instrument(span).await
            }
        }
    }

    /// Makes sure delayed messages for `queue` can reach it, once per queue: the cascades exist,
    /// and so does the queue, bound to them.
    async fn prepare_delayed(&self, queue: &str) -> Result<()> {
        if self.inner.known_queues.lock().unwrap_or_else(PoisonError::into_inner).contains(queue) {
            return Ok(());
        }
        // Boxed, as the publisher's channel opening is: once per queue, and large.
        Box::pin(self.bind_delayed(queue)).await
    }

    async fn bind_delayed(&self, queue: &str) -> Result<()> {
        let inner = &self.inner;
        inner
            .cascade
            .get_or_try_init(|| async {
                let channel = inner.broker.channel().await?;
                let declared = topology::declare_delay_cascades(&channel).await;
                if channel.status().connected() {
                    drop(channel.close(200, "declared".into()).await);
                }
                declared
            })
            .await?;
        if !topology::bind_delayed_destination(&inner.broker, queue).await? {
            return Err(Error::Unroutable {
                exchange: String::new(),
                routing_key: queue.to_owned(),
                reason: "NOT_FOUND: no queue of that name".to_owned(),
            });
        }
        inner.known_queues.lock().unwrap_or_else(PoisonError::into_inner).insert(queue.to_owned());
        Ok(())
    }

    async fn replies(&self) -> Result<&Replies> {
        let inner = &self.inner;
        inner
            .replies
            .get_or_try_init(|| {
                let queue = topology::reply_queue(&inner.id);
                Replies::start(inner.broker.clone(), queue, inner.options.reply_queue_expires)
            })
            .await
    }
}

/// Hands job `correlation_id`'s final result to the handle a recording `client` gave out for it.
/// For test harnesses (`lepus::internal::recording`).
pub fn answer(client: &Client, correlation_id: &str, result: ResultMessage) {
    if let Some(recorder) = &client.inner.recorder {
        recorder.answer(correlation_id, result);
    }
}

/// Records `message` for `queue` as sent by a recording `client` (a job's follow-up, say). For
/// test harnesses (`lepus::internal::recording`).
pub fn send(client: &Client, queue: &str, message: TaskMessage) {
    if let Some(recorder) = &client.inner.recorder {
        recorder.record(queue, message);
    }
}

/// Tells a recording `client` that a job of a batch it sent has finished for good; the batch's
/// callback is recorded when the last one has. For test harnesses (`lepus::internal::recording`).
pub fn finish_batch_job(client: &Client, record: &Record) {
    if let Some(recorder) = &client.inner.recorder {
        recorder.batch_job_finished(record);
    }
}
