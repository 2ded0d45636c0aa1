//! The orchestrator's own connection to RabbitMQ: it proves the broker is reachable, declares
//! the bench's queues the way Lepus does, tells when workers' consumers are attached and how many
//! messages a queue holds, and deletes the queues (and exchanges) afterwards. Each operation uses a fresh channel,
//! since a failed one closes it.

use crate::worker_process::WorkerProcess;
use anyhow::{Context, bail};
use lepus::lapin::options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use lepus::lapin::types::FieldTable;
use lepus::lapin::{Channel, Connection, ConnectionProperties};
use lepus::{ReplyCode, WorkQueue};
use std::fmt;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An open connection for declaring, inspecting and deleting queues.
#[derive(Debug)]
pub(crate) struct Admin {
    connection: Connection,
}

/// The broker could not be reached: one paragraph for the user.
#[derive(Debug)]
pub(crate) struct Unreachable {
    url: String,
    reason: String,
    /// How the broker refused, if it answered at all.
    refusal: Option<ReplyCode>,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { url, reason, refusal } = self;
        let advice = if matches!(refusal, Some(ReplyCode::AccessRefused | ReplyCode::NotAllowed)) {
            "The broker answered but refused the login: check the user, password and virtual host \
             in --amqp-url or LEPUS_AMQP_URL"
        } else {
            "The benchmark runs against a live broker: start RabbitMQ (for instance `sudo systemctl \
             start rabbitmq-server`), or point --amqp-url or LEPUS_AMQP_URL at a running one"
        };
        write!(f, "lepus-bench: cannot reach RabbitMQ at {url} ({reason}). {advice}, then run the benchmark again.")
    }
}

impl Admin {
    /// Connects, or explains why it cannot.
    pub(crate) async fn connect(url: &str) -> Result<Self, Unreachable> {
        let unreachable = |reason: String, refusal| Unreachable { url: lepus::internal::redact(url), reason, refusal };
        let properties = ConnectionProperties::default().with_connection_name("lepus-bench".into());
        match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties)).await {
            Ok(Ok(connection)) => Ok(Self { connection }),
            Ok(Err(e)) => Err(unreachable(e.to_string(), ReplyCode::of(&e))),
            Err(_) => Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"), None)),
        }
    }

    /// Declares work queue `name` (and its dead-letter queue) exactly as a Lepus worker does.
    pub(crate) async fn declare_work_queue(&self, name: &str) -> anyhow::Result<()> {
        let channel = self.channel().await?;
        WorkQueue::new(name)?.declare(&channel).await.with_context(|| format!("cannot declare queue {name}"))?;
        drop(channel.close(200, "declared".into()).await);
        Ok(())
    }

    /// Waits up to `timeout` for a consumer on queue `name`: the worker is ready.
    pub(crate) async fn await_consumer(
        &self,
        name: &str,
        worker: &mut WorkerProcess,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        self.await_consumers(name, std::slice::from_mut(worker), timeout).await
    }

    /// Waits up to `timeout` for as many consumers on queue `name` as there are `workers`.
    pub(crate) async fn await_consumers(
        &self,
        name: &str,
        workers: &mut [WorkerProcess],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let channel = self.channel().await?;
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        loop {
            let queue = channel.queue_declare(name.into(), passive, FieldTable::default()).await?;
            if queue.consumer_count() as usize >= workers.len() {
                drop(channel.close(200, "ready".into()).await);
                return Ok(());
            }
            for worker in workers.iter_mut() {
                worker.check_alive()?;
            }
            if Instant::now() >= deadline {
                bail!("{} of {} workers consumed {name} within {timeout:?}", queue.consumer_count(), workers.len());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The messages ready for delivery in queue `name`.
    pub(crate) async fn message_count(&self, name: &str) -> anyhow::Result<u32> {
        let channel = self.channel().await?;
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let queue = channel.queue_declare(name.into(), passive, FieldTable::default()).await;
        drop(channel.close(200, "counted".into()).await);
        Ok(queue.with_context(|| format!("cannot count the messages in {name}"))?.message_count())
    }

    /// Deletes the queues, whatever they hold; reports (but does not fail on) what it cannot.
    pub(crate) async fn delete(&self, names: &[String]) {
        for name in names {
            let deleted = match self.channel().await {
                Ok(channel) => {
                    let deleted = channel.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await;
                    drop(channel.close(200, "deleted".into()).await);
                    deleted.map(drop).map_err(anyhow::Error::from)
                }
                Err(e) => Err(e),
            };
            if let Err(e) = deleted {
                eprintln!("lepus-bench: cannot delete queue {name}: {e:#}");
            }
        }
    }

    /// Deletes the exchanges; reports (but does not fail on) what it cannot.
    pub(crate) async fn delete_exchanges(&self, names: &[String]) {
        for name in names {
            let deleted = match self.channel().await {
                Ok(channel) => {
                    let deleted = channel.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default()).await;
                    drop(channel.close(200, "deleted".into()).await);
                    deleted.map_err(anyhow::Error::from)
                }
                Err(e) => Err(e),
            };
            if let Err(e) = deleted {
                eprintln!("lepus-bench: cannot delete exchange {name}: {e:#}");
            }
        }
    }

    pub(crate) async fn close(self) {
        drop(self.connection.close(200, "done".into()).await);
    }

    /// A fresh channel, for declarations of a mode's own.
    pub(crate) async fn channel(&self) -> anyhow::Result<Channel> {
        self.connection.create_channel().await.context("cannot open a channel")
    }
}
