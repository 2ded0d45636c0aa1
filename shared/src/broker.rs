//! Connections to RabbitMQ: a [`Connector`] opens them (plain or TLS, with the frame size and
//! connection name Lepus uses), and a deadpool pool of them, [`Broker`], is what the client, the
//! worker and application code share. Channels are opened from pooled connections and kept for
//! as long as they work. (deadpool-lapin's own manager cannot take a TLS configuration, so the
//! pool has this manager of its own.)
//!
//! A broker URL setting may name several nodes of a cluster, separated by commas. A connector
//! starts at a random one ([`UrlOrder::Random`], so that processes spread over the nodes) or at
//! the first ([`UrlOrder::Listed`]), tries each in turn until one answers, and starts its next
//! connection, the one that replaces a lost connection, at the URL after the one that answered:
//! a process that loses its node reconnects to another. With one URL nothing of this shows.

use crate::error::{Error, Result};
use crate::tls::Tls;
use deadpool::managed::{self, Pool, PoolError, RecycleError, RecycleResult};
use lapin::tcp::OwnedTLSConfig;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long connecting may take before it counts as a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The frame size Lepus asks for unless the URL sets one: lapin keeps buffers of 32 frames per
/// direction and connection, 8 MiB at RabbitMQ's default of 128 KiB. Larger messages travel as
/// several frames.
const FRAME_MAX: u32 = 32 * 1024;

/// How long one of several URLs may take to answer before the next is tried.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// Which of several broker URLs a process tries first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UrlOrder {
    /// A random one: processes given the same list spread over the nodes.
    #[default]
    Random,
    /// The first listed (the nearest node, say); the others only when it does not answer.
    Listed,
}

impl FromStr for UrlOrder {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text.trim() {
            "random" => Ok(Self::Random),
            "listed" => Ok(Self::Listed),
            other => Err(format!("`{other}` is not `random` or `listed`")),
        }
    }
}

impl fmt::Display for UrlOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Random => "random",
            Self::Listed => "listed",
        })
    }
}

/// Opens connections to a broker, or to whichever node of a cluster answers, as one named client.
#[derive(Clone)]
pub struct Connector {
    nodes: Arc<[Node]>,
    /// The node the next connection tries first.
    next: Arc<AtomicUsize>,
    name: Arc<str>,
    url: Arc<str>,
}

/// One broker URL of a connector.
struct Node {
    uri: AMQPUri,
    tls: OwnedTLSConfig,
    url: Arc<str>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector").field("url", &self.url).field("name", &self.name).finish_non_exhaustive()
    }
}

impl Connector {
    /// Connections to `url` (`amqp://` or `amqps://user:pass@host:port/vhost`; several, of one
    /// cluster's nodes, separated by commas), shown in RabbitMQ as `name`, with `tls` over each
    /// URL's `cacertfile`/`certfile`/`keyfile`. Starts at a random URL (see [`Connector::order`]).
    /// Fails for a URL that does not parse, an empty list or a TLS file that cannot be read.
    pub fn new(url: &str, tls: &Tls, name: &str) -> Result<Self> {
        let nodes = url
            .split(',')
            .map(str::trim)
            .filter(|one| !one.is_empty())
            .map(|one| {
                let shown: Arc<str> = redact_one(one).into();
                let mut uri: AMQPUri =
                    one.parse().map_err(|reason| Error::InvalidUrl { url: shown.to_string(), reason })?;
                uri.query.frame_max.get_or_insert(FRAME_MAX);
                Ok(Node { uri, tls: tls.over_url(one).load()?, url: shown })
            })
            .collect::<Result<Arc<[Node]>>>()?;
        if nodes.is_empty() {
            return Err(Error::InvalidUrl { url: url.to_owned(), reason: "no broker URL is given".to_owned() });
        }
        let first = fastrand::usize(..nodes.len());
        let shown = nodes.iter().map(|node| &*node.url).collect::<Vec<_>>().join(",");
        Ok(Self { nodes, next: Arc::new(AtomicUsize::new(first)), name: name.into(), url: shown.into() })
    }

    /// The same, trying the URLs from the first listed rather than from a random one.
    #[must_use]
    pub fn order(self, order: UrlOrder) -> Self {
        if order == UrlOrder::Listed {
            self.next.store(0, Ordering::Relaxed);
        }
        self
    }

    /// The same, with the connection's heartbeat every `heartbeat` (whole seconds, at least 1).
    #[must_use]
    pub fn heartbeat(self, heartbeat: Duration) -> Self {
        let heartbeat = Some(u16::try_from(heartbeat.as_secs().max(1)).unwrap_or(u16::MAX));
        let nodes = self
            .nodes
            .iter()
            .map(|node| {
                let mut uri = node.uri.clone();
                uri.query.heartbeat = heartbeat;
                Node { uri, tls: node.tls.clone(), url: Arc::clone(&node.url) }
            })
            .collect();
        Self { nodes, ..self }
    }

    /// The broker's URL (or URLs) with the password masked, safe for logs.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens a connection, or says why not within `timeout`.
    pub async fn connect(&self, timeout: Duration) -> Result<Connection> {
        tokio::time::timeout(timeout, self.open())
            .await
            .unwrap_or_else(|_| Err(self.error(&format!("no answer within {timeout:?}"), None)))
    }

    /// Opens a connection to the first node that answers, from the one after the node of the
    /// last connection opened; with several nodes, each has [`ATTEMPT_TIMEOUT`] to answer.
    async fn open(&self) -> Result<Connection> {
        let count = self.nodes.len();
        let first = self.next.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        let mut last = None;
        for step in 0..count {
            let at = (first + step) % count;
            let node = &self.nodes[at];
            let attempt = if count == 1 {
                node.open(&self.name).await.map_err(Some)
            } else {
                tokio::time::timeout(ATTEMPT_TIMEOUT, node.open(&self.name))
                    .await
                    .map_or(Err(None), |opened| opened.map_err(Some))
            };
            match attempt {
                Ok(connection) => {
                    self.next.store((at + 1) % count, Ordering::Relaxed);
                    if count > 1 {
                        tracing::info!(broker = %node.url, "connected");
                    }
                    return Ok(connection);
                }
                Err(e) => {
                    let reason =
                        e.as_ref().map_or_else(|| format!("no answer within {ATTEMPT_TIMEOUT:?}"), ToString::to_string);
                    failures.push(if count == 1 { reason } else { format!("{}: {reason}", node.url) });
                    last = e.or(last);
                }
            }
        }
        self.next.store((first + 1) % count, Ordering::Relaxed);
        Err(self.error(&failures.join("; "), last.map(Box::new)))
    }

    fn error(&self, reason: &str, source: Option<Box<lapin::Error>>) -> Error {
        Error::Connect { url: self.url.to_string(), reason: reason.to_owned(), source }
    }
}

impl Node {
    async fn open(&self, name: &str) -> lapin::Result<Connection> {
        let properties = ConnectionProperties::default().with_connection_name(name.to_owned().into());
        lapin::DefaultConnectionBuilder::new()?
            .with_uri(self.uri.clone())
            .with_properties(properties)
            .with_tls_config(self.tls.clone())
            .connect()
            .await
    }
}

impl managed::Manager for Connector {
    type Type = Connection;
    type Error = Error;

    async fn create(&self) -> Result<Connection> {
        self.open().await
    }

    async fn recycle(&self, connection: &mut Connection, _: &managed::Metrics) -> RecycleResult<Error> {
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
    /// the TLS files in its query string; several nodes' URLs separated by commas); the
    /// connections show up in RabbitMQ under `name`. Fails at once, with the password masked,
    /// when no broker can be reached.
    pub async fn connect(url: &str, name: &str) -> Result<Self> {
        Self::connect_with(url, &Tls::default(), name, 16).await
    }

    /// Like [`Broker::connect`], with TLS files and at most `connections` connections in the
    /// pool. A process that only needs a few channels (a worker) does best with one: each
    /// connection costs an I/O thread and its buffers.
    pub async fn connect_with(url: &str, tls: &Tls, name: &str, connections: usize) -> Result<Self> {
        Self::connect_through(Connector::new(url, tls, name)?, connections).await
    }

    /// Like [`Broker::connect_with`], with a connector made by the caller (to choose its
    /// [`UrlOrder`] or heartbeat).
    pub async fn connect_through(connector: Connector, connections: usize) -> Result<Self> {
        let broker = Self::lazy(connector, connections)?;
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
                PoolError::Backend(e) => e,
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

    /// How many broker URLs (a cluster's nodes) connections are made to.
    #[must_use]
    pub fn nodes(&self) -> usize {
        self.pool.manager().nodes.len()
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
        let frame_max = |url: &str| {
            super::Connector::new(url, &super::Tls::default(), "t").expect("valid").nodes[0].uri.query.frame_max
        };
        assert_eq!(frame_max("amqp://h/%2f"), Some(32768));
        assert_eq!(frame_max("amqp://h/%2f?heartbeat=5"), Some(32768));
        assert_eq!(frame_max("amqp://h/%2f?frame_max=4096"), Some(4096));
    }

    fn connector(urls: &str) -> super::Connector {
        super::Connector::new(urls, &super::Tls::default(), "t").expect("valid")
    }

    #[test]
    fn several_urls_are_several_nodes_each_checked_and_masked() {
        let c = connector("amqp://a:one@h1/v, amqp://b:two@h2:5673/v,,");
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.url(), "amqp://a:***@h1/v,amqp://b:***@h2:5673/v");
        assert_eq!(&*c.nodes[1].url, "amqp://b:***@h2:5673/v");
        assert_eq!(c.nodes[1].uri.authority.port, 5673);
        let bad = super::Connector::new("amqp://a:one@h1/v,nonsense://b:two@h2/v", &super::Tls::default(), "t")
            .expect_err("a bad URL in the list");
        assert!(bad.to_string().contains("nonsense://b:***@h2/v") && !bad.to_string().contains("two"), "{bad}");
        let none = super::Connector::new(" , ", &super::Tls::default(), "t").expect_err("no URL");
        assert!(none.to_string().contains("no broker URL"), "{none}");
    }

    #[test]
    fn processes_start_at_a_random_url_unless_told_to_take_them_in_order() {
        let starts: std::collections::HashSet<usize> = (0..64)
            .map(|_| connector("amqp://h1/v,amqp://h2/v,amqp://h3/v").next.load(super::Ordering::Relaxed))
            .collect();
        assert_eq!(starts.len(), 3, "64 connectors started at {starts:?}");
        let listed = connector("amqp://h1/v,amqp://h2/v,amqp://h3/v").order(super::UrlOrder::Listed);
        assert_eq!(listed.next.load(super::Ordering::Relaxed), 0);
        assert_eq!("listed".parse(), Ok(super::UrlOrder::Listed));
        assert!("first".parse::<super::UrlOrder>().is_err());
    }

    #[tokio::test]
    async fn when_no_node_answers_the_error_names_each_and_the_next_attempt_starts_further_on() {
        let c = connector("amqp://u:secret@127.0.0.1:1/%2f,amqp://u:secret@127.0.0.1:2/%2f")
            .order(super::UrlOrder::Listed)
            .heartbeat(std::time::Duration::from_secs(3));
        assert!(c.nodes.iter().all(|node| node.uri.query.heartbeat == Some(3)));
        let e = c.connect(std::time::Duration::from_secs(20)).await.expect_err("nothing listens there");
        let text = e.to_string();
        assert!(
            text.contains("amqp://u:***@127.0.0.1:1/%2f: ") && text.contains("amqp://u:***@127.0.0.1:2/%2f: "),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
        assert_eq!(e.hint(), crate::error::UNREACHABLE_HINT);
        assert_eq!(c.next.load(super::Ordering::Relaxed), 1, "the next attempt starts at the second URL");
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
