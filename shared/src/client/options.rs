//! [`ClientOptions`]: a client's settings. New settings can be added without breaking anyone:
//! start from [`ClientOptions::default`] and change what you need.

use crate::broker::UrlOrder;
use crate::tls::Tls;
use crate::topology::EventLog;
use std::time::Duration;

/// Client settings.
///
/// ```
/// # use std::time::Duration;
/// let options = lepus::ClientOptions::default()
///     .connection_name("billing-api")
///     .result_timeout(Duration::from_secs(10));
/// assert_eq!(options.max_payload, 16 * 1024 * 1024);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// How long one broker operation may take: a publish waiting for its confirm, a read of a
    /// batch's progress. Default 30 s.
    pub broker_timeout: Duration,
    /// How long awaiting a [`crate::Pending`] directly (`pending.await`) waits for the result.
    /// Default 60 s.
    pub result_timeout: Duration,
    /// How long the reply queue outlives the client's last use of it. Default 1 h.
    pub reply_queue_expires: Duration,
    /// Largest message body the client sends. Default 16 MiB.
    pub max_payload: usize,
    /// The name the client's connections show in RabbitMQ. Default `lepus-client`.
    pub connection_name: String,
    /// TLS files for an `amqps://` broker (over those the URL's query names). Default none.
    pub tls: Tls,
    /// Which of several broker URLs to try first. Default: a random one.
    pub url_order: UrlOrder,
    /// How many publishes of one [`crate::Client::enqueue_many`] await their confirm at once.
    /// Default 256.
    pub publish_window: usize,
    /// The retention of the event stream `lepus.events.log`, which the client declares before
    /// its first [`crate::Client::publish`]. Default 7 days, 5 GiB; every process of a broker
    /// must say the same.
    pub event_log: EventLog,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            broker_timeout: Duration::from_secs(30),
            result_timeout: Duration::from_secs(60),
            reply_queue_expires: Duration::from_secs(3600),
            max_payload: 16 * 1024 * 1024,
            connection_name: "lepus-client".to_owned(),
            tls: Tls::default(),
            url_order: UrlOrder::Random,
            publish_window: 256,
            event_log: EventLog::default(),
        }
    }
}

impl ClientOptions {
    /// Sets [`ClientOptions::broker_timeout`].
    #[must_use]
    pub fn broker_timeout(mut self, timeout: Duration) -> Self {
        self.broker_timeout = timeout;
        self
    }

    /// Sets [`ClientOptions::result_timeout`].
    #[must_use]
    pub fn result_timeout(mut self, timeout: Duration) -> Self {
        self.result_timeout = timeout;
        self
    }

    /// Sets [`ClientOptions::reply_queue_expires`].
    #[must_use]
    pub fn reply_queue_expires(mut self, expires: Duration) -> Self {
        self.reply_queue_expires = expires;
        self
    }

    /// Sets [`ClientOptions::max_payload`].
    #[must_use]
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Sets [`ClientOptions::tls`].
    #[must_use]
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    /// Sets [`ClientOptions::url_order`].
    #[must_use]
    pub fn url_order(mut self, order: UrlOrder) -> Self {
        self.url_order = order;
        self
    }

    /// Sets [`ClientOptions::connection_name`].
    #[must_use]
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = name.into();
        self
    }

    /// Sets [`ClientOptions::publish_window`] (at least 1).
    #[must_use]
    pub fn publish_window(mut self, publishes: usize) -> Self {
        self.publish_window = publishes.max(1);
        self
    }
}
