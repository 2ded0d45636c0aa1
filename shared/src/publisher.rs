//! Publishing with confirms on one long-lived channel.
//!
//! Every publish is `mandatory` and waits for the broker's confirm, so success means the broker
//! has taken responsibility for the message and routed it to a queue. Publishes from many tasks
//! share the channel and are in flight together. A channel that died (connection loss, channel
//! error) is replaced on the next publish.
//!
//! A publish whose connection was lost before its confirm came is sent again on a new channel
//! (on another node, with several broker URLs), until the timeout: the broker may then hold the
//! message twice, but a message is never reported sent without a confirm, nor given up while a
//! connection can still be had (at least once).

use crate::broker::Broker;
use crate::error::{Error, Result};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// The pause before a publish whose connection was lost is sent again.
const RESEND_PAUSE: Duration = Duration::from_millis(100);

/// A message to publish.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// The exchange (`""` for the default exchange).
    pub exchange: &'a str,
    /// The routing key (the queue name on the default exchange).
    pub routing_key: &'a str,
    /// The body.
    pub body: &'a [u8],
    /// Properties and headers.
    pub properties: BasicProperties,
}

/// A confirm-mode channel that publishes and awaits confirms.
#[derive(Debug)]
pub struct Publisher {
    broker: Broker,
    /// The open channel; a plain mutex, held only to clone it.
    channel: Mutex<Option<Channel>>,
    /// Held while a new channel is opened, so that only one is.
    opening: tokio::sync::Mutex<()>,
    timeout: Duration,
}

impl Publisher {
    /// A publisher that opens its channel on first use; each publish and each confirm may take
    /// at most `timeout`.
    #[must_use]
    pub fn new(broker: Broker, timeout: Duration) -> Self {
        Self { broker, channel: Mutex::new(None), opening: tokio::sync::Mutex::new(()), timeout }
    }

    /// Publishes one message and waits for its confirm. An unroutable message is an error. A
    /// lost connection is not, while another can be had within the timeout (see the module
    /// docs).
    pub async fn publish(&self, message: Outgoing<'_>) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let channel = self.channel().await?;
            match self.publish_on(&channel, &message, deadline).await {
                Err(e @ Error::Amqp { .. })
                    if e.reply_code().is_none() && !channel.status().connected() && Instant::now() < deadline =>
                {
                    tracing::debug!(error = %e, routing_key = message.routing_key, "connection lost before the confirm: publishing again");
                    tokio::time::sleep(RESEND_PAUSE).await;
                }
                settled => return settled,
            }
        }
    }

    async fn publish_on(&self, channel: &Channel, message: &Outgoing<'_>, deadline: Instant) -> Result<()> {
        let Outgoing { exchange, routing_key, body, properties } = message;
        let (exchange, routing_key, body) = (*exchange, *routing_key, *body);
        let properties = properties.clone();
        let exchange_name = short("exchange", exchange)?;
        let key = short("routing key", routing_key)?;
        let options = BasicPublishOptions { mandatory: true, immediate: false };
        let confirmed = async {
            let confirm = channel
                .basic_publish(exchange_name, key, options, body, properties)
                .await
                .map_err(Error::amqp("publish"))?;
            confirm.await.map_err(Error::amqp("publisher confirm"))
        };
        let confirmation = tokio::time::timeout_at(deadline, confirmed)
            .await
            .map_err(Error::timeout("publisher confirm", self.timeout))??;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) => Err(Error::Unroutable {
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
                reason: returned.reply_text.to_string(),
            }),
            Confirmation::Nack(_) | Confirmation::NotRequested => {
                Err(Error::Nacked { routing_key: routing_key.to_owned() })
            }
        }
    }

    async fn channel(&self) -> Result<Channel> {
        if let Some(channel) = self.open_channel() {
            return Ok(channel);
        }
        // Boxed: opening a channel takes a large future, which would otherwise make every
        // publish's future (kept per message in flight) that large too.
        Box::pin(self.open_new_channel()).await
    }

    async fn open_new_channel(&self) -> Result<Channel> {
        let _opening = self.opening.lock().await;
        if let Some(channel) = self.open_channel() {
            return Ok(channel);
        }
        let channel = self.broker.channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(Error::amqp("confirm select"))?;
        *self.channel.lock().unwrap_or_else(PoisonError::into_inner) = Some(channel.clone());
        Ok(channel)
    }

    fn open_channel(&self) -> Option<Channel> {
        let current = self.channel.lock().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().filter(|c| c.status().connected()).cloned()
    }
}

fn short(kind: &'static str, name: &str) -> Result<ShortString> {
    ShortString::try_new(name).map_err(|_| Error::InvalidName {
        kind,
        name: name.to_owned(),
        reason: "longer than 255 bytes",
    })
}
