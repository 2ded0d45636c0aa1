//! Queues on the broker: the demo's own work queue (its name, how many workers consume it), and
//! looking up and deleting queues by name for the clean-up.

use anyhow::Context as _;
use lepus::Broker;
use lepus::lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lepus::lapin::types::FieldTable;

/// A queue name no other demo run uses: `lepus-demo-<pid>`.
pub(crate) fn demo_queue_name() -> String {
    format!("lepus-demo-{}", std::process::id())
}

/// How many consumers `queue` has (a passive declare, which changes nothing).
pub(crate) async fn consumers(broker: &Broker, queue: &str) -> anyhow::Result<u32> {
    let consumers = look_up(broker, queue).await?.with_context(|| format!("queue {queue} does not exist"))?;
    Ok(consumers)
}

/// Whether queue `queue` exists.
pub(crate) async fn exists(broker: &Broker, queue: &str) -> anyhow::Result<bool> {
    Ok(look_up(broker, queue).await?.is_some())
}

/// The consumer count of `queue`, `None` if there is no such queue (a passive declare, which
/// changes nothing; a missing queue closes the channel, which was opened for this alone).
async fn look_up(broker: &Broker, queue: &str) -> anyhow::Result<Option<u32>> {
    let channel = broker.channel().await?;
    let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    match channel.queue_declare(queue.into(), options, FieldTable::default()).await {
        Ok(declared) => {
            drop(channel.close(200, "looked up".into()).await);
            Ok(Some(declared.consumer_count()))
        }
        Err(e) if e.to_string().contains("NOT_FOUND") => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot look up queue {queue}"))),
    }
}

/// Deletes queue `queue` if it exists, with `options`; the messages it held, `None` if there was
/// no such queue.
pub(crate) async fn delete_if_present(
    broker: &Broker,
    queue: &str,
    options: QueueDeleteOptions,
) -> anyhow::Result<Option<u32>> {
    if !exists(broker, queue).await? {
        return Ok(None);
    }
    let channel = broker.channel().await?;
    let deleted =
        channel.queue_delete(queue.into(), options).await.with_context(|| format!("cannot delete queue {queue}"))?;
    drop(channel.close(200, "deleted".into()).await);
    Ok(Some(deleted))
}
