//! [`Mailbox`]: Celery's remote control from the asking side, as `celery inspect` and `celery
//! control` use it: broadcast a command on `celery.pidbox` and gather the nodes' replies from a
//! reply queue of its own. That queue is exclusive and auto-deleted, so nothing of a mailbox
//! outlives it. Lepus workers and Python Celery workers answer alike.

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::protocol::control::{ControlRequest, ReplyTo, header};
use crate::topology;
use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A remote-control mailbox on a channel of its own.
#[derive(Debug)]
pub struct Mailbox {
    channel: Channel,
    oid: String,
    consumer: Consumer,
    clock: u64,
}

/// Which nodes a command is for.
#[derive(Debug, Clone, Copy, Default)]
pub enum Nodes<'a> {
    /// Every node.
    #[default]
    All,
    /// The nodes named.
    Named(&'a [String]),
}

impl Mailbox {
    /// Opens a mailbox: its reply queue, and a consumer on it.
    pub async fn open(broker: &Broker) -> Result<Self> {
        let channel = broker.channel().await?;
        let oid = uuid::Uuid::new_v4().to_string();
        topology::declare_control_reply_queue(&channel, &oid).await?;
        let options = BasicConsumeOptions { no_ack: true, exclusive: true, ..BasicConsumeOptions::default() };
        let consumer = channel
            .basic_consume(topology::control_reply_queue(&oid).into(), "".into(), options, FieldTable::default())
            .await
            .map_err(Error::amqp("basic.consume"))?;
        Ok(Self { channel, oid, consumer, clock: 0 })
    }

    /// Broadcasts `method` with `arguments` to `nodes` and gathers replies for up to `timeout`,
    /// or until `limit` nodes have answered: each node's name and reply.
    pub async fn call(
        &mut self,
        method: &str,
        arguments: Map<String, Value>,
        nodes: Nodes<'_>,
        timeout: Duration,
        limit: Option<usize>,
    ) -> Result<Vec<(String, Value)>> {
        let ticket = uuid::Uuid::new_v4().to_string();
        let expires = unix_now() + timeout.as_secs_f64();
        self.send(method, arguments, nodes, Some(&ticket), Some(expires)).await?;
        let mut replies = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while limit.is_none_or(|limit| replies.len() < limit) {
            let next = match tokio::time::timeout_at(deadline, self.consumer.next()).await {
                Err(_) | Ok(None) => break,
                Ok(Some(next)) => next.map_err(Error::amqp("consume replies"))?,
            };
            if header(&next.properties, "ticket").as_ref().and_then(Value::as_str) != Some(ticket.as_str()) {
                continue;
            }
            if let Ok(Value::Object(answers)) = serde_json::from_slice::<Value>(&next.data) {
                replies.extend(answers);
            }
        }
        Ok(replies)
    }

    /// Broadcasts `method` with `arguments` to `nodes`, wanting no reply.
    pub async fn cast(&mut self, method: &str, arguments: Map<String, Value>, nodes: Nodes<'_>) -> Result<()> {
        self.send(method, arguments, nodes, None, None).await
    }

    /// Closes the mailbox; its reply queue goes with it.
    pub async fn close(self) {
        drop(self.channel.close(200, "mailbox closed".into()).await);
    }

    async fn send(
        &mut self,
        method: &str,
        arguments: Map<String, Value>,
        nodes: Nodes<'_>,
        ticket: Option<&str>,
        expires: Option<f64>,
    ) -> Result<()> {
        let destination = match nodes {
            Nodes::All => None,
            Nodes::Named(names) => Some(names.to_vec()),
        };
        let request = ControlRequest {
            method: method.to_owned(),
            arguments,
            destination,
            pattern: None,
            matcher: None,
            ticket: ticket.map(str::to_owned),
            reply_to: ticket.map(|_| ReplyTo {
                exchange: topology::CONTROL_REPLY_EXCHANGE.to_owned(),
                routing_key: self.oid.clone(),
            }),
        };
        self.clock += 1;
        let (body, properties) =
            request.encode(self.clock, expires).map_err(Error::serde("encode", "a control command"))?;
        self.channel
            .basic_publish(
                topology::CONTROL_EXCHANGE.into(),
                "".into(),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await
            .map_err(Error::amqp("publish a control command"))?;
        Ok(())
    }
}

/// The time now as Unix seconds.
#[must_use]
pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
