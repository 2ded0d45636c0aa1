//! [`Monitor`]: what Flower or `celery events` does to a worker's events during an `--events`
//! run: a queue bound to `celeryev` for every event, consumed, each event counted (a batch of
//! task events counts as the events it holds).

use anyhow::Context;
use futures_lite::StreamExt;
use lepus::internal::topology;
use lepus::lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lepus::lapin::types::FieldTable;
use lepus::lapin::{Connection, ConnectionProperties};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many events one message holds: a `task.multi` message holds a JSON array of them.
fn events_in(body: &[u8]) -> u64 {
    use serde::de::IgnoredAny;
    match serde_json::from_slice::<Vec<IgnoredAny>>(body) {
        Ok(events) => events.len() as u64,
        Err(_) => u64::from(serde_json::from_slice::<IgnoredAny>(body).is_ok()),
    }
}

/// A consumer of every event, counting them.
#[derive(Debug)]
pub(crate) struct Monitor {
    connection: Connection,
    seen: Arc<AtomicU64>,
    consuming: tokio::task::JoinHandle<()>,
}

impl Monitor {
    pub(crate) async fn start(url: &str) -> anyhow::Result<Self> {
        let properties = ConnectionProperties::default().with_connection_name("lepus-bench-monitor".into());
        let connection = Connection::connect(url, properties).await.context("the monitor cannot connect")?;
        let channel = connection.create_channel().await?;
        topology::declare_event_exchange(&channel).await?;
        let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
        let queue = channel.queue_declare("".into(), options, FieldTable::default()).await?;
        let name = queue.name().clone();
        channel
            .queue_bind(
                name.clone(),
                topology::EVENT_EXCHANGE.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let consume = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
        let mut consumer = channel.basic_consume(name, "".into(), consume, FieldTable::default()).await?;
        let seen = Arc::new(AtomicU64::new(0));
        let counting = Arc::clone(&seen);
        let consuming = tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                counting.fetch_add(events_in(&delivery.data), Ordering::Relaxed);
            }
        });
        Ok(Self { connection, seen, consuming })
    }

    /// Stops; how many events it saw.
    pub(crate) async fn stop(self) -> u64 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let seen = self.seen.load(Ordering::Relaxed);
        drop(self.connection.close(200, "done".into()).await);
        self.consuming.abort();
        seen
    }
}
