//! [`SchedulerConfig`]: a scheduler replica's settings.

use std::fmt;
use std::time::Duration;

/// A scheduler replica's settings.
#[derive(Clone)]
pub struct SchedulerConfig {
    /// Broker URL.
    pub amqp_url: String,
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
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            amqp_url: lepus::DEFAULT_AMQP_URL.to_owned(),
            group: "default".to_owned(),
            heartbeat: Duration::from_secs(5),
            standby_poll: Duration::from_millis(500),
            broker_timeout: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for SchedulerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchedulerConfig")
            .field("amqp_url", &lepus::redact(&self.amqp_url))
            .field("group", &self.group)
            .field("heartbeat", &self.heartbeat)
            .field("standby_poll", &self.standby_poll)
            .field("broker_timeout", &self.broker_timeout)
            .finish()
    }
}

impl SchedulerConfig {
    /// Checks the settings.
    pub(crate) fn validate(&self) -> Result<(), String> {
        lepus::topology::validate_name("scheduler group", &self.group).map_err(|e| e.to_string())?;
        if !(1..=600).contains(&self.heartbeat.as_secs()) {
            return Err(format!("heartbeat must be between 1 s and 10 min, not {:?}", self.heartbeat));
        }
        if self.standby_poll.is_zero() || self.broker_timeout.is_zero() {
            return Err("standby poll and broker timeout must be more than zero".into());
        }
        Ok(())
    }
}
