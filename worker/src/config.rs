//! [`WorkerConfig`]: everything a worker is told at start-up, validated before it connects.

use crate::error::WorkerError;
use crate::priorities::Priorities;
use lepus::{DEFAULT_DELIVERY_LIMIT, DEFAULT_QUEUE, Tls, UrlOrder, WorkQueue};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// A worker's settings. New settings can be added without breaking anyone: start from
/// [`WorkerConfig::default`] and change what you need.
///
/// ```
/// let config = lepus_worker::WorkerConfig::default().queues(["images", "emails"]).concurrency(32);
/// assert_eq!(config.queues, ["images", "emails"]);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Broker URL, `amqp://user:pass@host:port/vhost`; several nodes' URLs separated by commas.
    pub amqp_url: String,
    /// Which of several broker URLs to try first. Default: a random one.
    pub amqp_url_order: UrlOrder,
    /// Queues to consume (declared at start-up).
    pub queues: Vec<String>,
    /// Jobs run at once, over all queues; also each consumer's prefetch (twice it for the
    /// consumer of a priority tier, see [`WorkerConfig::priorities`]).
    pub concurrency: u16,
    /// How long running jobs may take to finish after a stop signal.
    pub grace_period: Duration,
    /// Times a message may be handed back (its worker died or lost its connection) before it is
    /// dead-lettered instead of run again: the queues' `x-delivery-limit`.
    pub delivery_limit: u32,
    /// Largest message body accepted; larger ones are dead-lettered.
    pub max_payload: usize,
    /// How long a publish (result, dead letter) or an ack may wait for the broker.
    pub broker_timeout: Duration,
    /// Where to serve `/metrics`, `/livez` and `/readyz` over HTTP; `None` (the default): no
    /// endpoint, and no metrics are kept.
    pub metrics_addr: Option<SocketAddr>,
    /// TLS files for an `amqps://` broker (over those the URL's query names).
    pub tls: Tls,
    /// The node name remote control and events know this worker by (`%h` stands for the host
    /// name); `None` (the default): `lepus@<hostname>-<pid>`, unique per process.
    pub name: Option<String>,
    /// Send Celery's monitoring events from the start (`-E`); a monitor may also turn them on
    /// (`enable_events`) and off. Default off.
    pub events: bool,
    /// Answer Celery's remote-control commands (`celery inspect`, `celery control`, Flower,
    /// `lepus status`). Default on.
    pub remote_control: bool,
    /// How long batch progress stays readable (the progress stream's `x-max-age`, whole seconds):
    /// default 7 days. Every worker of a broker must say the same: the first declares the stream,
    /// and a worker asking for another retention fails at start-up.
    pub batch_retention: Duration,
    /// The retention of the event stream `lepus.events.log` (declared at start-up with the
    /// other event exchanges). Default 7 days, 5 GiB; every process of a broker must say the same.
    pub event_log: lepus::EventLog,
    /// Where the worker's new services replay the event stream from before they go live, for
    /// the subscriptions that do not say ([`crate::Subscription::replay`]); `None` (the
    /// default): they do not replay. A service that already exists never replays.
    pub replay_from: Option<crate::ReplayFrom>,
    /// How long a job with a concurrency key waits for one of its key's slots before it goes back
    /// to the end of its queue (and another job can have its place). Default 10 s; at most 10
    /// minutes, far from RabbitMQ's 30-minute consumer timeout.
    pub slot_wait: Duration,
    /// Consume each queue `<q>` with its priority tiers `<q>.high` and `<q>.low` (see
    /// [`lepus::Priority`]), starting jobs in this order; `None` (the default): `<q>` alone.
    pub priorities: Option<Priorities>,
}

impl fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("amqp_url", &lepus::internal::redact(&self.amqp_url))
            .field("amqp_url_order", &self.amqp_url_order)
            .field("queues", &self.queues)
            .field("concurrency", &self.concurrency)
            .field("grace_period", &self.grace_period)
            .field("delivery_limit", &self.delivery_limit)
            .field("max_payload", &self.max_payload)
            .field("broker_timeout", &self.broker_timeout)
            .field("metrics_addr", &self.metrics_addr)
            .field("tls", &self.tls)
            .field("name", &self.name)
            .field("events", &self.events)
            .field("remote_control", &self.remote_control)
            .field("batch_retention", &self.batch_retention)
            .field("event_log", &self.event_log)
            .field("replay_from", &self.replay_from)
            .field("slot_wait", &self.slot_wait)
            .field("priorities", &self.priorities)
            .finish()
    }
}

/// The problem of a worker with no queue (and no subscription).
const NO_QUEUE: &str = "queues: no queue to consume: give at least one";

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            amqp_url: lepus::DEFAULT_AMQP_URL.to_owned(),
            amqp_url_order: UrlOrder::Random,
            queues: vec![DEFAULT_QUEUE.to_owned()],
            concurrency: 16,
            grace_period: Duration::from_secs(30),
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
            max_payload: 16 * 1024 * 1024,
            broker_timeout: Duration::from_secs(30),
            metrics_addr: None,
            tls: Tls::default(),
            name: None,
            events: false,
            remote_control: true,
            batch_retention: lepus::internal::topology::DEFAULT_BATCH_RETENTION,
            event_log: lepus::EventLog::default(),
            replay_from: None,
            slot_wait: Duration::from_secs(10),
            priorities: None,
        }
    }
}

impl WorkerConfig {
    /// Sets [`WorkerConfig::amqp_url`].
    #[must_use]
    pub fn amqp_url(mut self, url: impl Into<String>) -> Self {
        self.amqp_url = url.into();
        self
    }

    /// Sets [`WorkerConfig::amqp_url_order`].
    #[must_use]
    pub fn amqp_url_order(mut self, order: UrlOrder) -> Self {
        self.amqp_url_order = order;
        self
    }

    /// Sets [`WorkerConfig::queues`].
    #[must_use]
    pub fn queues<Q: Into<String>>(mut self, queues: impl IntoIterator<Item = Q>) -> Self {
        self.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`WorkerConfig::concurrency`].
    #[must_use]
    pub fn concurrency(mut self, jobs_at_once: u16) -> Self {
        self.concurrency = jobs_at_once;
        self
    }

    /// Sets [`WorkerConfig::grace_period`].
    #[must_use]
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = grace;
        self
    }

    /// Sets [`WorkerConfig::delivery_limit`].
    #[must_use]
    pub fn delivery_limit(mut self, limit: u32) -> Self {
        self.delivery_limit = limit;
        self
    }

    /// Sets [`WorkerConfig::max_payload`].
    #[must_use]
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Sets [`WorkerConfig::slot_wait`].
    #[must_use]
    pub fn slot_wait(mut self, wait: Duration) -> Self {
        self.slot_wait = wait;
        self
    }

    /// Sets [`WorkerConfig::broker_timeout`].
    #[must_use]
    pub fn broker_timeout(mut self, timeout: Duration) -> Self {
        self.broker_timeout = timeout;
        self
    }

    /// Sets [`WorkerConfig::metrics_addr`].
    #[must_use]
    pub fn metrics_addr(mut self, address: SocketAddr) -> Self {
        self.metrics_addr = Some(address);
        self
    }

    /// Sets [`WorkerConfig::name`].
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets [`WorkerConfig::events`].
    #[must_use]
    pub fn events(mut self, on: bool) -> Self {
        self.events = on;
        self
    }

    /// Sets [`WorkerConfig::remote_control`].
    #[must_use]
    pub fn remote_control(mut self, on: bool) -> Self {
        self.remote_control = on;
        self
    }

    /// The node name: [`WorkerConfig::name`] with `%h` replaced by the host name, or
    /// `lepus@<hostname>-<pid>`.
    #[must_use]
    pub fn node_name(&self) -> String {
        let own = lepus::internal::node_name();
        let host = own.rsplit_once(':').map_or(own, |(host, _)| host);
        match &self.name {
            Some(name) => name.replace("%h", host),
            None => format!("lepus@{host}-{}", std::process::id()),
        }
    }

    /// Sets [`WorkerConfig::batch_retention`].
    #[must_use]
    pub fn batch_retention(mut self, retention: Duration) -> Self {
        self.batch_retention = retention;
        self
    }

    /// Sets [`WorkerConfig::replay_from`].
    #[must_use]
    pub fn replay_from(mut self, from: crate::ReplayFrom) -> Self {
        self.replay_from = Some(from);
        self
    }

    /// Sets [`WorkerConfig::priorities`].
    #[must_use]
    pub fn priorities(mut self, order: Priorities) -> Self {
        self.priorities = Some(order);
        self
    }

    /// Sets [`WorkerConfig::tls`].
    #[must_use]
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    /// What is wrong with these settings, one line each, named by setting: empty if nothing is.
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.concurrency == 0 {
            problems.push("concurrency: must be at least 1".to_owned());
        }
        if self.queues.is_empty() {
            problems.push(NO_QUEUE.to_owned());
        }
        for (index, name) in self.queues.iter().enumerate() {
            if let Err(e) = WorkQueue::new(name.as_str()) {
                problems.push(format!("queues: {e}"));
            } else if self.queues[..index].contains(name) {
                problems.push(format!("queues: {name:?} is listed twice"));
            }
        }
        if let Some(order) = &self.priorities {
            problems.extend(order.problem());
            for name in &self.queues {
                if let Ok(queue) = WorkQueue::new(name.as_str())
                    && let Err(e) = lepus::internal::topology::tier_queues(&queue)
                {
                    problems.push(format!("queues: {name:?} cannot have priority tiers: {e}"));
                }
            }
        }
        if self.delivery_limit == 0 {
            problems.push("delivery_limit: must be at least 1".to_owned());
        }
        if self.broker_timeout.is_zero() {
            problems.push("broker_timeout: must be more than zero".to_owned());
        }
        if self.batch_retention < Duration::from_secs(60) {
            problems.push(format!(
                "batch_retention: {:?} is too short: give at least 1m (progress of a batch is readable this long after its last change)",
                self.batch_retention
            ));
        }
        if self.slot_wait.is_zero() || self.slot_wait > Duration::from_secs(600) {
            problems.push(format!("slot_wait: {:?} is not between 1ms and 10m", self.slot_wait));
        }
        problems.extend(self.tls.problems(&self.amqp_url));
        if let Some(name) = &self.name
            && (name.trim().is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            problems.push(format!("name: {name:?} is not a node name (no spaces, not empty)"));
        }
        problems
    }

    /// Checks the settings and returns the queues to consume.
    #[cfg(test)]
    pub(crate) fn validate(&self) -> Result<Vec<WorkQueue>, WorkerError> {
        self.validate_subscribing(false)
    }

    /// Like [`WorkerConfig::validate`]; a worker that `subscribing` runs event subscriptions may
    /// consume no work queue.
    pub(crate) fn validate_subscribing(&self, subscribing: bool) -> Result<Vec<WorkQueue>, WorkerError> {
        let mut problems = self.problems();
        if subscribing && self.queues.is_empty() {
            problems.retain(|problem| problem != NO_QUEUE);
        }
        if !problems.is_empty() {
            return Err(WorkerError::Config(problems.join("; ")));
        }
        self.queues
            .iter()
            .map(|name| {
                let queue = WorkQueue::new(name.as_str()).map_err(|e| WorkerError::Config(e.to_string()))?;
                Ok(queue.with_delivery_limit(self.delivery_limit))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_rejected_with_a_reason() {
        let bad = |change: fn(&mut WorkerConfig)| {
            let mut config = WorkerConfig::default();
            change(&mut config);
            config.validate().expect_err("invalid").to_string()
        };
        assert!(bad(|c| c.concurrency = 0).contains("concurrency: must be at least 1"));
        assert!(bad(|c| c.queues.clear()).contains("no queue"));
        assert!(bad(|c| c.queues = vec!["a".into(), "a".into()]).contains("twice"));
        assert!(bad(|c| c.queues = vec!["amq.x".into()]).contains("reserved"));
        assert!(bad(|c| c.batch_retention = Duration::from_secs(5)).contains("batch_retention: 5s is too short"));
        assert_eq!(WorkerConfig::default().validate().map(|q| q.len()).ok(), Some(1));
        let mut config = WorkerConfig::default().queues(["a", "a", "amq.b"]).concurrency(0);
        config.delivery_limit = 0;
        assert_eq!(config.problems().len(), 4, "every problem is named: {:?}", config.problems());
    }

    #[test]
    fn debug_output_hides_the_password() {
        let shown = format!("{:?}", WorkerConfig { amqp_url: "amqp://u:secret@h/".into(), ..WorkerConfig::default() });
        assert!(!shown.contains("secret"), "{shown}");
    }
}
