//! [`Transaction`]: publishes and acks that take effect together, or not at all, with an AMQP
//! transaction on a channel of its own.
//!
//! Used where two effects must not be separated by a crash: a scheduler's firing and its record
//! of having fired, a batch tracker's new snapshot and the records it consumed. If the process
//! dies before `commit` reaches the broker, nothing happens; once it has, everything has.

use crate::error::{Error, Result};
use crate::publisher::Outgoing;
use lapin::Channel;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use std::time::Duration;

/// A channel in transaction mode.
#[derive(Debug, Clone)]
pub struct Transaction {
    channel: Channel,
    timeout: Duration,
}

impl Transaction {
    /// Puts `channel` in transaction mode; each broker call may take at most `timeout`.
    pub async fn open(channel: Channel, timeout: Duration) -> Result<Self> {
        tokio::time::timeout(timeout, channel.tx_select())
            .await
            .map_err(Error::timeout("tx.select", timeout))?
            .map_err(Error::amqp("tx.select"))?;
        Ok(Self { channel, timeout })
    }

    /// The channel, to consume or `basic.get` on it (acks join the transaction).
    #[must_use]
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// How long each broker call may take.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Adds a publish to the transaction (persistent if the properties say so; `mandatory`).
    pub async fn publish(&self, message: Outgoing<'_>) -> Result<()> {
        let Outgoing { exchange, routing_key, body, properties } = message;
        let name = |kind, s: &str| {
            ShortString::try_new(s).map_err(|_| Error::InvalidName {
                kind,
                name: s.to_owned(),
                reason: "longer than 255 bytes",
            })
        };
        let options = BasicPublishOptions { mandatory: true, immediate: false };
        let publishing = self.channel.basic_publish(
            name("exchange", exchange)?,
            name("routing key", routing_key)?,
            options,
            body,
            properties,
        );
        let confirm = tokio::time::timeout(self.timeout, publishing)
            .await
            .map_err(Error::timeout("publish", self.timeout))?
            .map_err(Error::amqp("publish"))?;
        // No confirms in transaction mode: the future resolves at once.
        drop(confirm.await);
        Ok(())
    }

    /// Commits everything published and acked since the last commit. Returns the routing keys
    /// of messages the broker could not route (they were dropped; the rest is committed).
    pub async fn commit(&self) -> Result<Vec<String>> {
        tokio::time::timeout(self.timeout, self.channel.tx_commit())
            .await
            .map_err(Error::timeout("tx.commit", self.timeout))?
            .map_err(Error::amqp("tx.commit"))?;
        let returned = self.channel.wait_for_confirms().await.map_err(Error::amqp("tx.commit"))?;
        Ok(returned.into_iter().map(|r| r.delivery.routing_key.to_string()).collect())
    }
}
