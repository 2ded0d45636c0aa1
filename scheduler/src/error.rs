//! [`SchedulerError`]: why a scheduler replica could not run.

use std::time::Duration;

/// Why a scheduler could not run: its configuration is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// The scheduler group's name is not acceptable.
    #[error("invalid configuration: {0}")]
    Group(#[source] lepus::Error),
    /// The heartbeat is out of range.
    #[error("invalid configuration: the heartbeat must be between 1 s and 10 min, not {0:?}")]
    Heartbeat(Duration),
    /// A duration that must be positive is zero.
    #[error("invalid configuration: {0} must be more than zero")]
    Zero(&'static str),
    /// There is nothing to schedule.
    #[error("invalid configuration: no schedules to run")]
    NoSchedules,
}
