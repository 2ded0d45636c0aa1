//! Connections to RabbitMQ: a [`Connector`] opens them (plain or TLS, with the frame size and
//! connection name Lepus uses), and a deadpool pool of them, [`Broker`], is what the client, the
//! worker and application code share. Channels are opened from pooled connections and kept for
//! as long as they work. (deadpool-lapin's own manager cannot take a TLS configuration, so the
//! pool has this manager of its own.)

use crate::error::{Error, Result};
use crate::tls::Tls;
use deadpool::managed::{self, Pool, PoolError, RecycleError, RecycleResult};
use lapin::tcp::OwnedTLSConfig;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How long connecting may take before it counts as a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The frame size Lepus asks for unless the URL sets one: lapin keeps buffers of 32 frames per
/// direction and connection, 8 MiB at RabbitMQ's default of 128 KiB. Larger messages travel as
/// several frames.
const FRAME_MAX: u32 = 32 * 1024;

/// Opens connections to one broker, as one named client.
#[derive(Clone)]
pub struct Connector {
    uri: AMQPUri,
    tls: OwnedTLSConfig,
    name: Arc<str>,
    url: Arc<str>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector").field("url", &self.url).field("name", &self.name).finish_non_exhaustive()
    }
}

impl Connector {
    /// Connections to `url` (`amqp://` or `amqps://user:pass@host:port/vhost`), shown in RabbitMQ
    /// as `name`, with `tls` over the URL's `cacertfile`/`certfile`/`keyfile`. Fails for a URL that
    /// does not parse or a TLS file that cannot be read.
    pub fn new(url: &str, tls: &Tls, name: &str) -> Result<Self> {
        let shown: Arc<str> = redact(url).into();
        let mut uri: AMQPUri = url.parse().map_err(|reason| Error::InvalidUrl { url: shown.to_string(), reason })?;
        uri.query.frame_max.get_or_insert(FRAME_MAX);
        let tls = tls.over_url(url).load()?;
        Ok(Self { uri, tls, name: name.into(), url: shown })
    }

    /// The same, with the connection's heartbeat every `heartbeat` (whole seconds, at least 1).
    #[must_use]
    pub fn heartbeat(mut self, heartbeat: Duration) -> Self {
        self.uri.query.heartbeat = Some(u16::try_from(heartbeat.as_secs().max(1)).unwrap_or(u16::MAX));
        self
    }

    /// The broker's URL with the password masked, safe for logs.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens a connection, or says why not within `timeout`.
    pub async fn connect(&self, timeout: Duration) -> Result<Connection> {
        match tokio::time::timeout(timeout, self.open()).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(self.error(&e.to_string(), Some(Box::new(e)))),
            Err(_) => Err(self.error(&format!("no answer within {timeout:?}"), None)),
        }
    }

    async fn open(&self) -> lapin::Result<Connection> {
        let properties = ConnectionProperties::default().with_connection_name(self.name.to_string().into());
        lapin::DefaultConnectionBuilder::new()?
            .with_uri(self.uri.clone())
            .with_properties(properties)
            .with_tls_config(self.tls.clone())
            .connect()
            .await
    }

    fn error(&self, reason: &str, source: Option<Box<lapin::Error>>) -> Error {
        Error::Connect { url: self.url.to_string(), reason: reason.to_owned(), source }
    }
}

impl managed::Manager for Connector {
    type Type = Connection;
    type Error = lapin::Error;

    async fn create(&self) -> lapin::Result<Connection> {
        self.open().await
    }

    async fn recycle(&self, connection: &mut Connection, _: &managed::Metrics) -> RecycleResult<lapin::Error> {
        if connection.status().connected() { Ok(()) } else { Err(RecycleError::message("the connection is closed")) }
    }
}

/// A pool of connections to one broker.
#[derive(Clone)]
pub struct Broker {
    pool: Pool<Connector>,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker").field("url", &self.url()).finish_non_exhaustive()
    }
}

impl Broker {
    /// Connects to the broker at `url` (`amqp://user:pass@host:port/vhost`, or `amqps://` with
    /// the TLS files in its query string); the connections show up in RabbitMQ under `name`.
    /// Fails at once, with the password masked, when the broker cannot be reached.
    pub async fn connect(url: &str, name: &str) -> Result<Self> {
        Self::connect_with(url, &Tls::default(), name, 16).await
    }

    /// Like [`Broker::connect`], with TLS files and at most `connections` connections in the
    /// pool. A process that only needs a few channels (a worker) does best with one: each
    /// connection costs an I/O thread and its buffers.
    pub async fn connect_with(url: &str, tls: &Tls, name: &str, connections: usize) -> Result<Self> {
        let broker = Self::lazy(Connector::new(url, tls, name)?, connections)?;
        broker.channel().await?.close(200, "connected".into()).await.map_err(Error::amqp("channel close"))?;
        Ok(broker)
    }

    /// A pool of `connector`'s connections that connects on first use, not now.
    pub(crate) fn lazy(connector: Connector, connections: usize) -> Result<Self> {
        let url = connector.url.to_string();
        let pool = Pool::builder(connector).max_size(connections.max(1)).build().map_err(|e| Error::Connect {
            url,
            reason: e.to_string(),
            source: None,
        })?;
        Ok(Self { pool })
    }

    /// Opens a channel on a pooled connection (connecting if none is alive).
    pub async fn channel(&self) -> Result<Channel> {
        let connector = self.pool.manager();
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, self.pool.get())
            .await
            .map_err(|_| connector.error(&format!("no connection within {CONNECT_TIMEOUT:?}"), None))?
            .map_err(|e| match e {
                PoolError::Backend(e) => connector.error(&e.to_string(), Some(Box::new(e))),
                other => connector.error(&other.to_string(), None),
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
    pub fn pool(&self) -> &Pool<Connector> {
        &self.pool
    }

    /// The broker's URL with the password masked, safe for logs.
    #[must_use]
    pub fn url(&self) -> &str {
        self.pool.manager().url()
    }
}

/// Masks the password of an AMQP URL: `amqp://guest:***@host/`; in a comma-separated list of
/// URLs, every one's.
#[must_use]
pub fn redact(url: &str) -> String {
    url.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
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
        let frame_max =
            |url: &str| super::Connector::new(url, &super::Tls::default(), "t").expect("valid").uri.query.frame_max;
        assert_eq!(frame_max("amqp://h/%2f"), Some(32768));
        assert_eq!(frame_max("amqp://h/%2f?heartbeat=5"), Some(32768));
        assert_eq!(frame_max("amqp://h/%2f?frame_max=4096"), Some(4096));
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(redact("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact("amqps://u:p@ss:w@host/v"), "amqps://u:***@host/v");
        assert_eq!(redact("amqp://host:5672"), "amqp://host:5672");
        assert_eq!(
            redact("amqp://a:one@h1/v,amqp://b:two@h2:5673/v, amqps://c:three@h3/v"),
            "amqp://a:***@h1/v,amqp://b:***@h2:5673/v, amqps://c:***@h3/v"
        );
    }
}
