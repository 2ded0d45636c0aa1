//! The demo's own work queue on the broker: its name, how many workers consume it, and deleting
//! it with its dead-letter queue at the end.

use anyhow::Context as _;
use lepus::Broker;
use lepus::lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lepus::lapin::types::FieldTable;
use lepus::topology::WorkQueue;

/// A queue name no other demo run uses: `lepus-demo-<pid>`.
pub(crate) fn demo_queue_name() -> String {
    format!("lepus-demo-{}", std::process::id())
}

/// How many consumers `queue` has (a passive declare, which changes nothing).
pub(crate) async fn consumers(broker: &Broker, queue: &str) -> anyhow::Result<u32> {
    let channel = broker.channel().await?;
    let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let declared = channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .with_context(|| format!("cannot look up queue {queue}"))?;
    drop(channel.close(200, "looked up".into()).await);
    Ok(declared.consumer_count())
}

/// Messages left in the queues when they were deleted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Leftovers {
    pub(crate) queued: u32,
    pub(crate) dead_lettered: u32,
}

/// Deletes the work queue and its dead-letter queue.
pub(crate) async fn delete(broker: &Broker, queue: &WorkQueue) -> anyhow::Result<Leftovers> {
    let channel = broker.channel().await?;
    let mut counts = [0; 2];
    for (name, count) in [queue.name().to_owned(), queue.dead_letter_queue()].iter().zip(&mut counts) {
        *count = channel
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await
            .with_context(|| format!("cannot delete queue {name}"))?;
    }
    drop(channel.close(200, "deleted".into()).await);
    let [queued, dead_lettered] = counts;
    Ok(Leftovers { queued, dead_lettered })
}
