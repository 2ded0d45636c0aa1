//! The raw side of the sending end: plain lapin on a connection of its own, as the baselines
//! measured it. Jobs are a small fixed JSON body (a Celery body with no arguments) with no headers,
//! or, with `--raw-headers`, the very headers and body of a Lepus `demo.noop` job; persistent and
//! `mandatory`, on a confirm-mode channel. Each publish and its confirm run in a
//! task of their own, at most the window's worth at once: awaiting publishes one after the other
//! would serialise them on lapin's I/O thread. Results arrive on a reply queue declared as Lepus
//! declares its own (`topology::declare_reply_queue`), consumed without acks on a second channel
//! by a task that hands each result's correlation id over.

use crate::producer::{Producer, RESULT_TIMEOUT};
use anyhow::{Context, bail};
use futures_lite::StreamExt;
use lepus::lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lepus::lapin::types::{FieldTable, ShortString};
use lepus::lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use lepus::protocol::{Arguments, TaskMessage};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};

/// The job body: what a Celery v2 body with no arguments looks like.
pub(crate) const BODY: &[u8] = br#"[[],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]"#;

/// How long the reply queue outlives its last use, as a Lepus client's does by default.
const REPLY_QUEUE_EXPIRES: Duration = Duration::from_secs(3600);

const MANDATORY: BasicPublishOptions = BasicPublishOptions { mandatory: true, immediate: false };

/// A lapin connection sending jobs to one queue and receiving their results on another.
#[derive(Debug)]
pub(crate) struct RawProducer {
    connection: Connection,
    publishing: Channel,
    queue: ShortString,
    reply_queue: ShortString,
    /// Correlation ids of arrived results, in arrival order.
    results: Mutex<mpsc::UnboundedReceiver<ShortString>>,
    receiving: JoinHandle<()>,
    next_id: AtomicU64,
    window: usize,
    /// The job's body, and its headers if any.
    body: Arc<[u8]>,
    headers: Option<FieldTable>,
}

impl RawProducer {
    pub(crate) async fn connect(
        url: &str,
        queue: &str,
        reply_queue: &str,
        window: usize,
        celery_headers: bool,
    ) -> anyhow::Result<Self> {
        let properties = ConnectionProperties::default().with_connection_name("lepus-bench raw producer".into());
        let connection = Connection::connect(url, properties).await.context("connect")?;
        let publishing = connection.create_channel().await?;
        publishing.confirm_select(ConfirmSelectOptions::default()).await?;
        let consuming = connection.create_channel().await?;
        lepus::internal::topology::declare_reply_queue(&consuming, reply_queue, REPLY_QUEUE_EXPIRES, false).await?;
        let options = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
        let mut consumer =
            consuming.basic_consume(reply_queue.into(), "".into(), options, FieldTable::default()).await?;
        let (arrived, results) = mpsc::unbounded_channel();
        let receiving = tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                if arrived.send(delivery.properties.correlation_id().clone().unwrap_or_default()).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            connection,
            publishing,
            queue: queue.into(),
            reply_queue: reply_queue.into(),
            results: Mutex::new(results),
            receiving,
            next_id: AtomicU64::new(0),
            window,
            body: Arc::from(BODY),
            headers: None,
        }
        .with_celery_headers(celery_headers))
    }

    /// Takes the body and headers of an encoded Lepus `demo.noop` message, if asked to.
    fn with_celery_headers(mut self, wanted: bool) -> Self {
        if wanted {
            let noop = TaskMessage::new("demo.noop", Arguments::default());
            if let Ok((body, properties)) = noop.encode() {
                self.body = Arc::from(body);
                self.headers = properties.headers().clone();
            }
        }
        self
    }

    /// A job's properties: persistent JSON, with a correlation id and `reply_to` if it wants a
    /// result. Returns the correlation id too.
    fn job(&self, reply: bool) -> (ShortString, BasicProperties) {
        let id: ShortString = self.next_id.fetch_add(1, Ordering::Relaxed).to_string().into();
        let mut properties =
            BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
        if reply {
            properties = properties.with_correlation_id(id.clone()).with_reply_to(self.reply_queue.clone());
        }
        if let Some(headers) = &self.headers {
            properties = properties.with_headers(headers.clone());
        }
        (id, properties)
    }

    /// Publishes `n` jobs, each from a task of its own, at most the window's worth at once.
    async fn publish_windowed(&self, n: u64, reply: bool, sent: &Arc<AtomicU64>) -> anyhow::Result<()> {
        let window = Arc::new(Semaphore::new(self.window));
        let mut publishing = JoinSet::new();
        for _ in 0..n {
            let permit = Arc::clone(&window).acquire_owned().await?;
            let (channel, queue, (_, properties)) = (self.publishing.clone(), self.queue.clone(), self.job(reply));
            let (sent, body) = (Arc::clone(sent), Arc::clone(&self.body));
            publishing.spawn(async move {
                let published = publish(&channel, queue, &body, properties).await;
                drop(permit);
                sent.fetch_add(1, Ordering::Relaxed);
                published
            });
            while let Some(done) = publishing.try_join_next() {
                done??;
            }
        }
        while let Some(done) = publishing.join_next().await {
            done??;
        }
        Ok(())
    }

    /// The next result's correlation id.
    async fn next_result(results: &mut mpsc::UnboundedReceiver<ShortString>) -> anyhow::Result<ShortString> {
        match tokio::time::timeout(RESULT_TIMEOUT, results.recv()).await {
            Ok(Some(id)) => Ok(id),
            Ok(None) => bail!("the reply consumer stopped"),
            Err(_) => bail!("no result within {RESULT_TIMEOUT:?}"),
        }
    }
}

/// Publishes a job to `queue` and waits for its confirm; anything but a plain ack is an error.
async fn publish(
    channel: &Channel,
    queue: ShortString,
    body: &[u8],
    properties: BasicProperties,
) -> anyhow::Result<()> {
    let confirm = channel.basic_publish("".into(), queue, MANDATORY, body, properties).await?;
    match confirm.await? {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) => bail!("message returned unroutable: {}", returned.reply_text),
        other => bail!("message not confirmed: {other:?}"),
    }
}

impl Producer for RawProducer {
    async fn send(&self, n: u64, sent: &Arc<AtomicU64>) -> anyhow::Result<()> {
        self.publish_windowed(n, false, sent).await
    }

    async fn send_for_results(
        &self,
        n: u64,
        sent: &Arc<AtomicU64>,
        received: &Arc<AtomicU64>,
    ) -> anyhow::Result<Instant> {
        let mut results = self.results.lock().await;
        let collecting = async {
            for _ in 0..n {
                Self::next_result(&mut results).await?;
                received.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Instant::now())
        };
        let ((), last) = tokio::try_join!(self.publish_windowed(n, true, sent), collecting)?;
        Ok(last)
    }

    async fn call(&self) -> anyhow::Result<()> {
        let (id, properties) = self.job(true);
        publish(&self.publishing, self.queue.clone(), &self.body, properties).await?;
        let mut results = self.results.lock().await;
        while Self::next_result(&mut results).await? != id {}
        Ok(())
    }

    async fn close(self) -> anyhow::Result<()> {
        self.receiving.abort();
        Ok(self.connection.close(200, "done".into()).await?)
    }
}
