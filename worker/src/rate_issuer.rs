//! The issuer of one rate key's tokens, elected among the worker processes that know the key.
//!
//! Every such process runs this loop: it asks for the key's lock (the exclusive queue
//! `lepus.rate.<key>.issuer`, on the worker's connection) every second until it gets it. The
//! holder announces itself (node name, rate, time) in `lepus.rate.<key>.issuer-info`, then puts
//! tokens into the bucket `lepus.rate.<key>` on a schedule fixed at the moment it took the lock:
//! by `t` seconds after it, the bucket's capacity plus `floor(t × rate)` starts in all, published
//! in ticks of one token interval (10 ms at the least), confirmed, each token worth
//! `Rate::token_weight` starts (1 up to 500/s). A tick that comes late publishes what is owed, at
//! most the bucket's capacity: a stalled issuer never makes a burst larger than the bucket. The
//! lock goes with the connection, so when the issuing process dies the broker drops it at once
//! and a standby takes it at its next try (within about a second); tokens and the lock share the
//! connection, so a process that lost the lock cannot issue.

use lepus::internal::{persistent_json, topology};
use lepus::lapin::BasicProperties;
use lepus::lapin::Channel;
use lepus::lapin::Confirmation;
use lepus::lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeleteOptions};
use lepus::{Broker, Rate, RateIssuer, ReplyCode};
use std::time::{Duration, Instant};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// How often a standby asks for the lock.
const STANDBY_POLL: Duration = Duration::from_secs(1);

/// The shortest time between two issuing ticks.
const MIN_TICK: Duration = Duration::from_millis(10);

/// Starts competing for the issuing of `key`'s tokens at `rate`, until `stop`.
pub(crate) fn start(broker: Broker, key: String, rate: Rate, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            match lead(&broker, &key, &rate, &stop).await {
                Ok(()) => return,
                Err(e) if e.reply_code() == Some(ReplyCode::ResourceLocked) => {}
                Err(e) => tracing::warn!(rate_key = key, error = %e, "rate issuer: trying again"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(STANDBY_POLL) => {}
            }
        }
    });
}

/// Takes the lock (or fails, `RESOURCE_LOCKED` while another process holds it), announces it
/// and issues until `stop` (`Ok`) or until the channel fails.
async fn lead(broker: &Broker, key: &str, rate: &Rate, stop: &CancellationToken) -> lepus::Result<()> {
    let channel = broker.channel().await?;
    topology::take_rate_lock(&channel, key).await?;
    let issued = issue(&channel, key, rate, stop).await;
    if stop.is_cancelled() && channel.status().connected() {
        // The lock is the connection's, not the channel's: give it up for a standby.
        let lock = topology::rate_lock_queue(key);
        drop(channel.queue_delete(lock.as_str().into(), QueueDeleteOptions::default()).await);
    }
    if channel.status().connected() {
        drop(channel.close(200, "rate issuer".into()).await);
    }
    issued
}

async fn issue(channel: &Channel, key: &str, rate: &Rate, stop: &CancellationToken) -> lepus::Result<()> {
    let amqp = |operation| move |source| lepus::Error::Amqp { operation, source };
    channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(amqp("confirm.select"))?;
    topology::declare_rate_tokens(channel, key, rate).await?;
    topology::declare_rate_issuer_info(channel, key).await?;
    let node = lepus::internal::node_name().to_owned();
    let announcement = RateIssuer { node, rate: rate.to_string(), since: chrono::Utc::now() };
    let body = serde_json::to_vec(&announcement).map_err(|source| lepus::Error::Serde {
        action: "encode",
        what: "a rate issuer announcement".into(),
        source,
    })?;
    publish(channel, &topology::rate_issuer_queue(key), &body, persistent_json(), 1).await?;
    tracing::info!(rate_key = key, %rate, "this process now issues the rate key's tokens");
    let bucket = topology::rate_token_queue(key);
    let per_second = rate.per_second();
    let capacity = u64::from(rate.capacity());
    let weight = u64::from(rate.token_weight());
    let token = weight.to_string();
    let mut ticks = tokio::time::interval(rate.interval().max(MIN_TICK));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let start = Instant::now();
    let mut issued: u64 = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = ticks.tick() => {}
        }
        // In starts. The first tick fills the bucket: a new issuer starts with a full bucket, as
        // an idle one. What a late tick owes beyond the bucket's capacity is forgone.
        let due = (start.elapsed().as_secs_f64() * per_second) as u64 + capacity;
        issued = issued.max(due.saturating_sub(capacity));
        let tokens = (due - issued) / weight;
        if tokens > 0 {
            publish(channel, &bucket, token.as_bytes(), BasicProperties::default(), tokens).await?;
            issued += tokens * weight;
        }
    }
}

/// Publishes `count` copies of `body` to `queue` (`mandatory`) and waits for their confirms. A
/// copy the broker returned (no such queue) is an error.
async fn publish(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
    count: u64,
) -> lepus::Result<()> {
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let mut confirms = Vec::new();
    for _ in 0..count {
        let confirm = channel
            .basic_publish("".into(), queue.into(), options, body, properties.clone())
            .await
            .map_err(|source| lepus::Error::Amqp { operation: "basic.publish", source })?;
        confirms.push(confirm);
    }
    for confirm in confirms {
        match confirm.await.map_err(|source| lepus::Error::Amqp { operation: "publisher confirm", source })? {
            Confirmation::Ack(None) | Confirmation::NotRequested => {}
            Confirmation::Ack(Some(_)) | Confirmation::Nack(_) => {
                return Err(lepus::Error::Unroutable {
                    exchange: String::new(),
                    routing_key: queue.to_owned(),
                    reason: "the rate bucket is gone; declaring it again".into(),
                });
            }
        }
    }
    Ok(())
}
