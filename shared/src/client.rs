//! The client: enqueue jobs, call them and await their typed results.

use crate::batch::{Batch, BatchId, BatchProgress, PreparedBatch, Snapshot};
use crate::broker::Broker;
use crate::dead_letter::DeadLetters;
use crate::error::{Error, Result};
use crate::job::JobId;
use crate::protocol::{ExceptionInfo, ResultMessage, Status, TaskMessage};
use crate::publisher::{Outgoing, Publisher};
use crate::replies::{Replies, Waiters};
use crate::request::Request;
use crate::topology::{self, WorkQueue};
use chrono::{DateTime, TimeZone, Utc};
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{OnceCell, oneshot};
use tracing::Instrument;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long a publish may wait for the broker's confirm.
    pub confirm_timeout: Duration,
    /// How long the reply queue outlives the client's last use of it.
    pub reply_queue_expires: Duration,
    /// Largest message body the client sends.
    pub max_payload: usize,
    /// The name the client's connections show in RabbitMQ.
    pub connection_name: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            confirm_timeout: Duration::from_secs(30),
            reply_queue_expires: Duration::from_secs(3600),
            max_payload: 16 * 1024 * 1024,
            connection_name: "lepus-client".to_owned(),
        }
    }
}

/// A handle to send jobs and receive their results. Cheap to clone; clones share the broker
/// connections, the confirm channel and the reply queue.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    broker: Broker,
    publisher: Publisher,
    replies: OnceCell<Replies>,
    /// Set once this client has declared the delay cascade.
    cascade: OnceCell<()>,
    /// Queues known to exist, for delayed publishes (which the broker cannot refuse as
    /// unroutable: the cascade always takes them).
    known_queues: Mutex<HashSet<String>>,
    options: ClientOptions,
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
        let broker = Broker::connect(url, &options.connection_name).await?;
        Ok(Self::with_broker(broker, options))
    }

    /// A client on an existing connection pool.
    #[must_use]
    pub fn with_broker(broker: Broker, options: ClientOptions) -> Self {
        let publisher = Publisher::new(broker.clone(), options.confirm_timeout);
        let id = uuid::Uuid::new_v4().to_string();
        let known_queues = Mutex::default();
        let inner =
            Inner { id, broker, publisher, replies: OnceCell::new(), cascade: OnceCell::new(), known_queues, options };
        Self { inner: Arc::new(inner) }
    }

    /// The broker connections, for application code that shares them.
    #[must_use]
    pub fn broker(&self) -> &Broker {
        &self.inner.broker
    }

    /// Sends a job without asking for its result. Returns its id once the broker has confirmed
    /// the message; fails if no queue of that name exists.
    pub async fn enqueue<O>(&self, request: impl Into<Request<O>>) -> Result<JobId> {
        let (queue, message) = request.into().into_message(Utc::now())?;
        self.publish(&queue, &message).await?;
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

    /// Sends a job and returns a handle to await its result later.
    pub async fn submit<O>(&self, request: impl Into<Request<O>>) -> Result<Pending<O>> {
        let (queue, mut message) = request.into().into_message(Utc::now())?;
        let replies = self.replies().await?;
        message.reply_to = Some(replies.queue().to_owned());
        let correlation_id = message.correlation_id.clone().unwrap_or_else(|| message.id.to_string());
        let pending = Pending {
            id: message.id.clone(),
            correlation_id: correlation_id.clone(),
            receiver: replies.waiters().register(&correlation_id),
            waiters: Arc::clone(replies.waiters()),
            output: PhantomData,
        };
        self.publish(&queue, &message).await?;
        Ok(pending)
    }

    /// Sends a job and waits up to `timeout` for its typed result.
    pub async fn call<O: DeserializeOwned>(&self, request: impl Into<Request<O>>, timeout: Duration) -> Result<O> {
        self.submit(request).await?.wait(timeout).await
    }

    /// Declares a work queue (and its dead-letter queue), as a worker does at start-up.
    pub async fn declare_queue(&self, queue: &WorkQueue) -> Result<()> {
        let channel = self.inner.broker.channel().await?;
        queue.declare(&channel).await?;
        drop(channel.close(200, "declared".into()).await);
        Ok(())
    }

    /// Sends a batch: its progress record first, then every job (many in flight). Returns the
    /// batch id once the broker has confirmed them all. Fails before sending anything if a job
    /// is invalid; if the broker fails midway, the jobs sent so far run and the batch never
    /// completes.
    pub async fn enqueue_batch(&self, batch: Batch) -> Result<BatchId> {
        let PreparedBatch { id, snapshot, messages } = batch.prepare(Utc::now())?;
        let channel = self.inner.broker.channel().await?;
        topology::declare_batch_progress(&channel, &id).await?;
        drop(channel.close(200, "declared".into()).await);
        let snapshot = snapshot.encode()?;
        let progress = topology::batch_progress_queue(&id);
        let properties = lapin::BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(crate::protocol::CONTENT_TYPE.into());
        self.inner
            .publisher
            .publish(Outgoing { exchange: "", routing_key: &progress, body: &snapshot, properties })
            .await?;

        let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
        let mut sending = tokio::task::JoinSet::new();
        for (queue, message) in messages {
            let permit = Arc::clone(&in_flight).acquire_owned().await.map_err(|_| Error::Closed(message.id.clone()))?;
            let client = self.clone();
            sending.spawn(async move {
                let sent = client.publish(&queue, &message).await;
                drop(permit);
                sent
            });
        }
        while let Some(sent) = sending.join_next().await {
            match sent {
                Ok(sent) => sent?,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        Ok(id)
    }

    /// Where batch `id` stands, from its latest snapshot in the broker.
    pub async fn batch_progress(&self, id: &BatchId) -> Result<BatchProgress> {
        // The tracker takes the snapshot out for a moment while it replaces it: look again.
        for _ in 0..100 {
            if let Some(snapshot) = self.latest_snapshot(id).await? {
                return Ok(snapshot.progress());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(Error::Timeout { what: "a batch snapshot", after: Duration::from_secs(2) })
    }

    /// The snapshot with the highest `seq` in the batch's progress queue, read without
    /// consuming it; `None` if the queue holds none right now.
    async fn latest_snapshot(&self, id: &BatchId) -> Result<Option<Snapshot>> {
        let channel = self.inner.broker.channel().await?;
        let queue = topology::batch_progress_queue(id);
        let mut latest: Option<Snapshot> = None;
        loop {
            match channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false }).await {
                Ok(Some(message)) => {
                    let snapshot = serde_json::from_slice::<Snapshot>(&message.delivery.data).ok();
                    if let Some(snapshot) = snapshot.filter(|s| latest.as_ref().is_none_or(|l| s.seq > l.seq)) {
                        latest = Some(snapshot);
                    }
                }
                Ok(None) => break,
                Err(_) => return Err(Error::UnknownBatch(id.clone())),
            }
        }
        // Closing the channel puts the snapshots back, untouched.
        drop(channel.close(200, "read".into()).await);
        Ok(latest)
    }

    /// The dead letters of work queue `queue`: list, requeue, purge.
    pub fn dead_letters(&self, queue: &str) -> Result<DeadLetters> {
        Ok(DeadLetters::new(self.clone(), WorkQueue::new(queue)?))
    }

    pub(crate) fn publisher(&self) -> &Publisher {
        &self.inner.publisher
    }

    /// Stops receiving results and deletes this client's reply queue. Pending results fail with
    /// [`Error::Closed`].
    pub async fn close(&self) -> Result<()> {
        match self.inner.replies.get() {
            Some(replies) => replies.close().await,
            None => Ok(()),
        }
    }

    async fn publish(&self, queue: &str, message: &TaskMessage) -> Result<()> {
        let (body, properties) = message.encode().map_err(|e| Error::Serde {
            action: "encode",
            what: format!("job {}", message.task),
            reason: e.to_string(),
        })?;
        let limit = self.inner.options.max_payload;
        if body.len() > limit {
            return Err(Error::PayloadTooLarge { size: body.len(), limit });
        }
        let span = tracing::debug_span!("enqueue", job.id = %message.id, job.name = %message.task, queue);
        let delay = message.eta.and_then(|eta| (eta - Utc::now()).to_std().ok()).unwrap_or_default();
        match topology::delayed_route(queue, delay)? {
            None => {
                let outgoing = Outgoing { exchange: "", routing_key: queue, body: &body, properties };
                self.inner.publisher.publish(outgoing).instrument(span).await
            }
            Some(route) => {
                self.prepare_delayed(queue).await?;
                let outgoing =
                    Outgoing { exchange: &route.exchange, routing_key: &route.routing_key, body: &body, properties };
                self.inner.publisher.publish(outgoing).instrument(span).await
            }
        }
    }

    /// Makes sure the delay cascade exists and `queue` too, since a delayed message is
    /// routable whether or not its destination exists.
    async fn prepare_delayed(&self, queue: &str) -> Result<()> {
        let inner = &self.inner;
        if inner.known_queues.lock().unwrap_or_else(PoisonError::into_inner).contains(queue) {
            return Ok(());
        }
        let channel = inner.broker.channel().await?;
        inner.cascade.get_or_try_init(|| topology::declare_delay_cascade(&channel)).await?;
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let exists = channel.queue_declare(queue.into(), passive, FieldTable::default()).await;
        drop(channel.close(200, "checked".into()).await);
        if let Err(e) = exists {
            return Err(Error::Unroutable {
                exchange: String::new(),
                routing_key: queue.to_owned(),
                reason: e.to_string(),
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

/// A submitted job whose result can be awaited. Dropping it stops waiting.
#[derive(Debug)]
pub struct Pending<O> {
    id: JobId,
    correlation_id: String,
    receiver: oneshot::Receiver<ResultMessage>,
    waiters: Arc<Waiters>,
    output: PhantomData<fn() -> O>,
}

impl<O: DeserializeOwned> Pending<O> {
    /// The job's id.
    #[must_use]
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// Waits up to `timeout` for the job's final result message, whatever its status.
    pub async fn result(mut self, timeout: Duration) -> Result<ResultMessage> {
        match tokio::time::timeout(timeout, &mut self.receiver).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(Error::Closed(self.id.clone())),
            Err(_) => Err(Error::Timeout { what: "the job's result", after: timeout }),
        }
    }

    /// Waits up to `timeout` for the job's typed output; a failed job is an [`Error::JobFailed`].
    pub async fn wait(self, timeout: Duration) -> Result<O> {
        let id = self.id.clone();
        let result = self.result(timeout).await?;
        let exception =
            || Box::new(result.exception().unwrap_or_else(|| ExceptionInfo::new("Unknown", result.result.to_string())));
        match result.status {
            Status::Success => serde_json::from_value(result.result.clone()).map_err(|e| Error::Serde {
                action: "decode",
                what: format!("the result of job {id}"),
                reason: e.to_string(),
            }),
            Status::Revoked => Err(Error::JobRevoked { id, exception: exception() }),
            _ => Err(Error::JobFailed {
                id,
                exception: exception(),
                traceback: result.traceback.as_deref().map(Box::from),
            }),
        }
    }
}

impl<O> Drop for Pending<O> {
    fn drop(&mut self) {
        self.waiters.forget(&self.correlation_id);
    }
}
