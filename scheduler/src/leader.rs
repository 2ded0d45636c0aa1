//! Leadership: the replica whose connection holds the exclusive lock queue leads. The lock and
//! every firing share that one connection, so a replica that lost the lock (its connection died)
//! can no longer publish anything.

use crate::config::SchedulerConfig;
use lepus::lapin::uri::AMQPUri;
use lepus::lapin::{Channel, Connection, ConnectionProperties};
use lepus::topology;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// This replica leads while this is alive and [`Leadership::held`].
#[derive(Debug)]
pub(crate) struct Leadership {
    connection: Connection,
}

impl Leadership {
    /// Waits until this replica takes the lock; `None` if `stop` comes first.
    pub(crate) async fn acquire(config: &SchedulerConfig, name: &str, stop: &CancellationToken) -> Option<Self> {
        let mut standing_by = false;
        loop {
            match connect(config, name).await {
                Ok(connection) => loop {
                    if !connection.status().connected() {
                        break;
                    }
                    let locked = match connection.create_channel().await {
                        Ok(channel) => topology::take_scheduler_lock(&channel, &config.group).await,
                        Err(e) => Err(lepus::Error::Amqp { operation: "channel open", source: e }),
                    };
                    match locked {
                        Ok(()) => return Some(Self { connection }),
                        Err(e) if e.to_string().contains("RESOURCE_LOCKED") => {
                            if !standing_by {
                                tracing::info!("another replica leads; standing by");
                                standing_by = true;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot take the scheduler lock");
                            break;
                        }
                    }
                    if wait(stop, config.standby_poll).await {
                        drop(connection.close(200, "stopping".into()).await);
                        return None;
                    }
                },
                Err(e) => tracing::warn!(error = %e, "cannot connect to the broker"),
            }
            if wait(stop, config.standby_poll).await {
                return None;
            }
        }
    }

    /// Whether the lock is still held (the connection that holds it is alive).
    pub(crate) fn held(&self) -> bool {
        self.connection.status().connected()
    }

    /// A channel on the leader's connection.
    pub(crate) async fn channel(&self) -> lepus::Result<Channel> {
        self.connection
            .create_channel()
            .await
            .map_err(|source| lepus::Error::Amqp { operation: "channel open", source })
    }

    /// Gives the lock up at once (the exclusive queue goes with the connection).
    pub(crate) async fn release(self) {
        drop(self.connection.close(200, "scheduler stopping".into()).await);
    }
}

/// Connects with the configured heartbeat; the connection shows in RabbitMQ as `name`.
async fn connect(config: &SchedulerConfig, name: &str) -> lepus::Result<Connection> {
    let redacted = lepus::redact(&config.amqp_url);
    let mut uri: AMQPUri =
        config.amqp_url.parse().map_err(|reason| lepus::Error::InvalidUrl { url: redacted.clone(), reason })?;
    uri.query.heartbeat = Some(u16::try_from(config.heartbeat.as_secs()).unwrap_or(u16::MAX));
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let connecting = Connection::connect_uri(uri, properties);
    match tokio::time::timeout(config.broker_timeout, connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(lepus::Error::Connect { url: redacted, reason: e.to_string() }),
        Err(_) => Err(lepus::Error::Connect {
            url: redacted,
            reason: format!("no answer within {:?}", config.broker_timeout),
        }),
    }
}

/// Sleeps `period`; returns whether `stop` came first.
async fn wait(stop: &CancellationToken, period: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(period) => false,
    }
}
