//! [`WorkerError`]: why a worker stopped with a failure.

use std::time::Duration;

/// A worker failed to start or to stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The broker could not be reached at start-up.
    #[error("{0}\n\n{hint}", hint = .0.hint())]
    Unreachable(lepus::Error),
    /// The broker refused the worker's set-up (e.g. a queue exists with other arguments).
    #[error("{0}")]
    Broker(lepus::Error),
    /// The metrics and health endpoint cannot listen on its address.
    #[error(transparent)]
    Endpoint(lepus::Error),
    /// Jobs were still running when the grace period ended; the broker will redeliver them.
    #[error("{in_flight} job(s) still running after the grace period of {grace:?}; the broker will redeliver them")]
    GracePeriodElapsed {
        /// How many jobs were still running.
        in_flight: usize,
        /// The grace period.
        grace: Duration,
    },
}

impl From<lepus::Error> for WorkerError {
    fn from(error: lepus::Error) -> Self {
        match error {
            lepus::Error::Connect { .. } | lepus::Error::Tls(_) => WorkerError::Unreachable(error),
            other => WorkerError::Broker(other),
        }
    }
}
