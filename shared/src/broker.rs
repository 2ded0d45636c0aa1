//! Connections to RabbitMQ: a deadpool-lapin pool that the client, the worker and application
//! code share. Channels are opened from pooled connections and kept for as long as they work.

use crate::error::{Error, Result};
use deadpool_lapin::{Config, Pool, PoolConfig, PoolError, Runtime};
use lapin::{Channel, ConnectionProperties};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What to tell a person whose broker cannot be reached.
pub const UNREACHABLE_HINT: &str = "Is RabbitMQ running? Start it with `rabbitmq-server -detached` (install it with `apt-get install rabbitmq-server`), or point LEPUS_AMQP_URL (or --amqp-url) at your broker.";

/// How long connecting may take before it counts as a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A pool of connections to one broker.
#[derive(Clone)]
pub struct Broker {
    pool: Pool,
    url: Arc<str>,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Broker {
    /// Connects to the broker at `url` (`amqp://user:pass@host:port/vhost`); the connections show
    /// up in RabbitMQ under `name`. Fails at once, with the password masked, when the broker
    /// cannot be reached.
    pub async fn connect(url: &str, name: &str) -> Result<Self> {
        Self::connect_with(url, name, 16).await
    }

    /// Like [`Broker::connect`], with at most `connections` connections in the pool. A process
    /// that only needs a few channels (a worker) does best with one: each connection costs an I/O
    /// thread and its buffers.
    ///
    /// Unless the URL sets `frame_max`, Lepus asks for 32 KiB frames: lapin keeps buffers of 32
    /// frames per direction and connection, 8 MiB at RabbitMQ's default of 128 KiB. Larger
    /// messages travel as several frames.
    pub async fn connect_with(url: &str, name: &str, connections: usize) -> Result<Self> {
        let broker = Self::lazy(url, name, connections)?;
        broker.channel().await?.close(200, "connected".into()).await.map_err(Error::amqp("channel close"))?;
        Ok(broker)
    }

    /// A pool for `url` that connects on first use, not now.
    pub(crate) fn lazy(url: &str, name: &str, connections: usize) -> Result<Self> {
        let redacted: Arc<str> = redact(url).into();
        url.parse::<lapin::uri::AMQPUri>().map_err(|reason| Error::InvalidUrl { url: redacted.to_string(), reason })?;
        let name = name.to_owned();
        let url = with_frame_max(url);
        let config = Config { url: Some(url), pool: Some(PoolConfig::new(connections.max(1))) };
        let pool = config
            .create_pool(
                move || ConnectionProperties::default().with_connection_name(name.clone().into()),
                Runtime::Tokio1,
            )
            .map_err(|e| Error::Connect { url: redacted.to_string(), reason: e.to_string(), source: None })?;
        Ok(Self { pool, url: redacted })
    }

    /// Opens a channel on a pooled connection (connecting if none is alive).
    pub async fn channel(&self) -> Result<Channel> {
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, self.pool.get())
            .await
            .map_err(|_| self.connect_error(format!("no connection within {CONNECT_TIMEOUT:?}"), None))?
            .map_err(|e| match e {
                PoolError::Backend(e) => self.connect_error(e.to_string(), Some(Box::new(e))),
                other => self.connect_error(other.to_string(), None),
            })?;
        connection.create_channel().await.map_err(Error::amqp("channel open"))
    }

    /// Closes the pooled connections cleanly (the broker logs a close, not a lost client) and
    /// closes the pool.
    pub async fn close(&self) {
        for connection in self.pool.retain(|_, _| false).removed {
            drop(connection.close(200, "closing".into()).await);
        }
        self.pool.close();
    }

    /// The connection pool, for application code that talks to RabbitMQ directly.
    #[must_use]
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The broker's URL with the password masked, safe for logs.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    fn connect_error(&self, reason: String, source: Option<Box<lapin::Error>>) -> Error {
        Error::Connect { url: self.url.to_string(), reason, source }
    }
}

/// The URL with `frame_max=32768` added, unless it sets a frame size already.
fn with_frame_max(url: &str) -> String {
    if url.contains("frame_max=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&frame_max=32768")
    } else {
        format!("{url}?frame_max=32768")
    }
}

/// Masks the password of an AMQP URL: `amqp://guest:***@host/`.
#[must_use]
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{}", &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn a_frame_size_is_asked_for_unless_the_url_sets_one() {
        assert_eq!(super::with_frame_max("amqp://h/%2f"), "amqp://h/%2f?frame_max=32768");
        assert_eq!(super::with_frame_max("amqp://h/%2f?heartbeat=5"), "amqp://h/%2f?heartbeat=5&frame_max=32768");
        assert_eq!(super::with_frame_max("amqp://h/%2f?frame_max=4096"), "amqp://h/%2f?frame_max=4096");
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(redact("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact("amqps://u:p@ss:w@host/v"), "amqps://u:***@host/v");
        assert_eq!(redact("amqp://host:5672"), "amqp://host:5672");
    }
}
