//! A worker's remote control: its command queue `<node>.celery.pidbox` on Celery's broadcast
//! exchange, served until the worker stops (and again after a reconnect), each command answered
//! by the [`Panel`] on `reply.celery.pidbox`. Expired commands (their `expires` header has
//! passed) and commands for other nodes are ignored, as a Celery worker ignores them.
//!
//! At start-up the worker also asks the nodes already running for the ids they hold as revoked
//! (Celery's `hello`), so that a worker started after a revoke knows it too.

use crate::commands::Panel;
use futures_lite::StreamExt;
use lepus::Broker;
use lepus::control::{Mailbox, Nodes, unix_now};
use lepus::internal::topology;
use lepus::lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lepus::lapin::types::FieldTable;
use lepus::lapin::{Channel, Consumer};
use lepus::protocol::control::{ControlRequest, encode_reply, header};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long the start-up `hello` waits for other nodes' revoked ids.
const HELLO_TIMEOUT: Duration = Duration::from_secs(1);

/// Declares this node's command queue and consumes it; fails if another process already holds
/// the node name (the queue is exclusive).
pub(crate) async fn open(broker: &Broker, node: &str) -> lepus::Result<(Channel, Consumer)> {
    let channel = broker.channel().await?;
    topology::declare_pidbox(&channel, node).await?;
    let options = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
    let consumer = channel
        .basic_consume(topology::pidbox_queue(node).as_str().into(), "".into(), options, FieldTable::default())
        .await
        .map_err(|source| lepus::Error::Amqp { operation: "basic.consume", source })?;
    Ok((channel, consumer))
}

/// Serves remote control from the already opened `first` until `stop`, opening the command queue
/// again (by the reconnect policy) after losing it.
pub(crate) async fn serve(broker: Broker, panel: Arc<Panel>, first: (Channel, Consumer), stop: CancellationToken) {
    tokio::spawn(hello(broker.clone(), Arc::clone(&panel)));
    let (mut channel, mut consumer) = first;
    loop {
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => {
                    drop(channel.close(200, "worker stopping".into()).await);
                    return;
                }
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => answer(&channel, &panel, &delivery).await,
                Some(Err(e)) => tracing::debug!(error = %e, "remote control consumer error"),
                None => break,
            }
        }
        let reopen = || open(&broker, &panel.node);
        match lepus::internal::reconnect("remote control", &stop, reopen).await {
            Some((c, k)) => (channel, consumer) = (c, k),
            None => return,
        }
    }
}

/// Answers one command, if it is for this node and not expired.
async fn answer(channel: &Channel, panel: &Panel, delivery: &lepus::lapin::message::Delivery) {
    let request = match ControlRequest::decode(&delivery.data) {
        Ok(request) => request,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable remote control command ignored");
            return;
        }
    };
    if let Some(clock) = header(&delivery.properties, "clock").and_then(|c| c.as_u64()) {
        panel.clock.fetch_max(clock, Ordering::Relaxed);
    }
    let expires = header(&delivery.properties, "expires").and_then(|e| e.as_f64()).unwrap_or(0.0);
    if (expires > 0.0 && unix_now() > expires) || !request.is_for(&panel.node) {
        return;
    }
    tracing::debug!(method = request.method, "remote control command");
    let reply = panel.handle(&request.method, &request.arguments);
    let (Some(reply_to), false) = (&request.reply_to, reply.is_null()) else { return };
    let clock = panel.clock.fetch_add(1, Ordering::Relaxed) + 1;
    let Ok((body, properties)) = encode_reply(&panel.node, &reply, request.ticket.as_deref(), clock) else { return };
    let published = channel
        .basic_publish(
            reply_to.exchange.as_str().into(),
            reply_to.routing_key.as_str().into(),
            BasicPublishOptions::default(),
            &body,
            properties,
        )
        .await;
    if let Err(e) = published {
        tracing::warn!(error = %e, method = request.method, "cannot reply to a remote control command");
    }
}

/// Asks the running nodes for their revoked ids and keeps them (Celery's mingle).
async fn hello(broker: Broker, panel: Arc<Panel>) {
    let Ok(mut mailbox) = Mailbox::open(&broker).await else { return };
    let now = unix_now();
    let mut arguments = Map::new();
    arguments.insert("from_node".into(), Value::from(&*panel.node));
    arguments.insert("revoked".into(), Value::Object(panel.revoked.snapshot(now)));
    if let Ok(replies) = mailbox.call("hello", arguments, Nodes::All, HELLO_TIMEOUT, None).await {
        let mut learnt = 0;
        for (node, reply) in replies {
            if node == *panel.node {
                continue;
            }
            if let Some(Value::Object(revoked)) = reply.get("revoked") {
                for (id, at) in revoked {
                    panel.revoked.insert(id, at.as_f64().unwrap_or(now));
                    learnt += 1;
                }
            }
        }
        if learnt > 0 {
            tracing::info!(learnt, "revoked ids learnt from the running workers");
        }
    }
    mailbox.close().await;
}
