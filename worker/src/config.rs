//! [`WorkerConfig`]: everything a worker is told at start-up, validated before it connects.

use crate::error::WorkerError;
use lepus::{DEFAULT_DELIVERY_LIMIT, DEFAULT_QUEUE, WorkQueue};
use std::fmt;
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
    /// Broker URL, `amqp://user:pass@host:port/vhost`.
    pub amqp_url: String,
    /// Queues to consume (declared at start-up).
    pub queues: Vec<String>,
    /// Jobs run at once, over all queues; also each consumer's prefetch.
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
}

impl fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("amqp_url", &lepus::internal::redact(&self.amqp_url))
            .field("queues", &self.queues)
            .field("concurrency", &self.concurrency)
            .field("grace_period", &self.grace_period)
            .field("delivery_limit", &self.delivery_limit)
            .field("max_payload", &self.max_payload)
            .field("broker_timeout", &self.broker_timeout)
            .finish()
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            amqp_url: lepus::DEFAULT_AMQP_URL.to_owned(),
            queues: vec![DEFAULT_QUEUE.to_owned()],
            concurrency: 16,
            grace_period: Duration::from_secs(30),
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
            max_payload: 16 * 1024 * 1024,
            broker_timeout: Duration::from_secs(30),
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

    /// Sets [`WorkerConfig::broker_timeout`].
    #[must_use]
    pub fn broker_timeout(mut self, timeout: Duration) -> Self {
        self.broker_timeout = timeout;
        self
    }

    /// Checks the settings and returns the queues to consume.
    pub(crate) fn validate(&self) -> Result<Vec<WorkQueue>, WorkerError> {
        let invalid = |reason: String| Err(WorkerError::Config(reason));
        if self.concurrency == 0 {
            return invalid("concurrency must be at least 1".into());
        }
        if self.queues.is_empty() {
            return invalid("no queue to consume: give at least one".into());
        }
        if self.delivery_limit == 0 {
            return invalid("delivery limit must be at least 1".into());
        }
        if self.broker_timeout.is_zero() {
            return invalid("broker timeout must be more than zero".into());
        }
        let mut queues: Vec<WorkQueue> = Vec::with_capacity(self.queues.len());
        for name in &self.queues {
            let queue = WorkQueue::new(name.as_str())
                .map_err(|e| WorkerError::Config(e.to_string()))?
                .with_delivery_limit(self.delivery_limit);
            if queues.contains(&queue) {
                return invalid(format!("queue {name:?} is listed twice"));
            }
            queues.push(queue);
        }
        Ok(queues)
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
        assert!(bad(|c| c.concurrency = 0).contains("concurrency"));
        assert!(bad(|c| c.queues.clear()).contains("no queue"));
        assert!(bad(|c| c.queues = vec!["a".into(), "a".into()]).contains("twice"));
        assert!(bad(|c| c.queues = vec!["amq.x".into()]).contains("reserved"));
        assert_eq!(WorkerConfig::default().validate().map(|q| q.len()).ok(), Some(1));
    }

    #[test]
    fn debug_output_hides_the_password() {
        let shown = format!("{:?}", WorkerConfig { amqp_url: "amqp://u:secret@h/".into(), ..WorkerConfig::default() });
        assert!(!shown.contains("secret"), "{shown}");
    }
}
