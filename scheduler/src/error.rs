//! [`SchedulerError`]: why a scheduler replica could not run.

use std::time::Duration;

/// Why a scheduler could not run: its configuration is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// The scheduler group's name is not acceptable.
    #[error("{0}")]
    Group(#[source] lepus::Error),
    /// The heartbeat is out of range.
    #[error("the heartbeat must be between 1 s and 10 min, not {0:?}")]
    Heartbeat(Duration),
    /// A duration that must be positive is zero.
    #[error("{0} must be more than zero")]
    Zero(&'static str),
    /// The broker URL or the TLS files cannot be used.
    #[error(transparent)]
    Broker(lepus::Error),
    /// The broker could not be reached at start-up.
    #[error("{0}\n\n{hint}", hint = .0.hint())]
    Unreachable(lepus::Error),
    /// The metrics and health endpoint cannot listen on its address.
    #[error(transparent)]
    Endpoint(lepus::Error),
    /// There is nothing to schedule.
    #[error("no schedules to run")]
    NoSchedules,
}
