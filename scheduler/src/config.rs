//! [`SchedulerConfig`]: a scheduler replica's settings.

use crate::error::SchedulerError;
use lepus::{Tls, UrlOrder};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// A scheduler replica's settings. New settings can be added without breaking anyone: start from
/// [`SchedulerConfig::default`] and change what you need.
#[derive(Clone)]
#[non_exhaustive]
pub struct SchedulerConfig {
    /// Broker URL; several nodes' URLs separated by commas.
    pub amqp_url: String,
    /// Which of several broker URLs to try first. Default: a random one.
    pub amqp_url_order: UrlOrder,
    /// The scheduler group: replicas of one group share one lead and one set of schedule states;
    /// groups with other names run independently on the same broker.
    pub group: String,
    /// Heartbeat of the leader's connection: a leader that stops answering loses the lead within
    /// about two heartbeats. A leader that dies outright loses it at once.
    pub heartbeat: Duration,
    /// How often a standby replica tries to take the lead.
    pub standby_poll: Duration,
    /// How long one broker call may take.
    pub broker_timeout: Duration,
    /// Where to serve `/metrics`, `/livez` and `/readyz` over HTTP; `None` (the default): no
    /// endpoint, and no metrics are kept.
    pub metrics_addr: Option<SocketAddr>,
    /// TLS files for an `amqps://` broker (over those the URL's query names).
    pub tls: Tls,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            amqp_url: lepus::DEFAULT_AMQP_URL.to_owned(),
            amqp_url_order: UrlOrder::Random,
            group: "default".to_owned(),
            heartbeat: Duration::from_secs(5),
            standby_poll: Duration::from_millis(500),
            broker_timeout: Duration::from_secs(30),
            metrics_addr: None,
            tls: Tls::default(),
        }
    }
}

impl fmt::Debug for SchedulerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchedulerConfig")
            .field("amqp_url", &lepus::internal::redact(&self.amqp_url))
            .field("amqp_url_order", &self.amqp_url_order)
            .field("group", &self.group)
            .field("heartbeat", &self.heartbeat)
            .field("standby_poll", &self.standby_poll)
            .field("broker_timeout", &self.broker_timeout)
            .field("metrics_addr", &self.metrics_addr)
            .field("tls", &self.tls)
            .finish()
    }
}

impl SchedulerConfig {
    /// Sets [`SchedulerConfig::amqp_url`].
    #[must_use]
    pub fn amqp_url(mut self, url: impl Into<String>) -> Self {
        self.amqp_url = url.into();
        self
    }

    /// Sets [`SchedulerConfig::amqp_url_order`].
    #[must_use]
    pub fn amqp_url_order(mut self, order: UrlOrder) -> Self {
        self.amqp_url_order = order;
        self
    }

    /// Sets [`SchedulerConfig::group`].
    #[must_use]
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// Sets [`SchedulerConfig::heartbeat`].
    #[must_use]
    pub fn heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// Sets [`SchedulerConfig::standby_poll`].
    #[must_use]
    pub fn standby_poll(mut self, poll: Duration) -> Self {
        self.standby_poll = poll;
        self
    }

    /// Sets [`SchedulerConfig::broker_timeout`].
    #[must_use]
    pub fn broker_timeout(mut self, timeout: Duration) -> Self {
        self.broker_timeout = timeout;
        self
    }

    /// Sets [`SchedulerConfig::metrics_addr`].
    #[must_use]
    pub fn metrics_addr(mut self, address: SocketAddr) -> Self {
        self.metrics_addr = Some(address);
        self
    }

    /// Sets [`SchedulerConfig::tls`].
    #[must_use]
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    /// What is wrong with these settings, one line each, named by setting: empty if nothing is.
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        let problems = self.errors().into_iter().map(|(setting, error)| format!("{setting}: {error}"));
        problems.chain(self.tls.problems(&self.amqp_url)).collect()
    }

    /// Checks the settings.
    pub(crate) fn validate(&self) -> Result<(), SchedulerError> {
        self.errors().into_iter().next().map_or(Ok(()), |(_, error)| Err(error))
    }

    /// Every problem, with the setting it is about.
    fn errors(&self) -> Vec<(&'static str, SchedulerError)> {
        let mut errors = Vec::new();
        if let Err(e) = lepus::internal::topology::validate_name("scheduler group", &self.group) {
            errors.push(("group", SchedulerError::Group(e)));
        }
        if !(1..=600).contains(&self.heartbeat.as_secs()) {
            errors.push(("heartbeat", SchedulerError::Heartbeat(self.heartbeat)));
        }
        for (setting, what, duration) in [
            ("standby_poll", "the standby poll", self.standby_poll),
            ("broker_timeout", "the broker timeout", self.broker_timeout),
        ] {
            if duration.is_zero() {
                errors.push((setting, SchedulerError::Zero(what)));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_named_by_its_setting() {
        let config =
            SchedulerConfig::default().group("no spaces").heartbeat(Duration::ZERO).broker_timeout(Duration::ZERO);
        let problems = config.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("group: "), "{problems:?}");
        assert!(problems[1].starts_with("heartbeat: the heartbeat must be between 1 s and 10 min"), "{problems:?}");
        assert_eq!(problems[2], "broker_timeout: the broker timeout must be more than zero");
        assert!(SchedulerConfig::default().problems().is_empty());
    }
}
