//! [`JobContext`]: what a handler knows about the run it is part of.

use lepus::JobId;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Passed to every handler call.
#[derive(Debug, Clone)]
pub struct JobContext {
    id: JobId,
    name: Arc<str>,
    retries: u32,
    shutdown: CancellationToken,
}

impl JobContext {
    pub(crate) fn new(id: JobId, name: Arc<str>, retries: u32, shutdown: CancellationToken) -> Self {
        Self { id, name, retries, shutdown }
    }

    /// The job's id.
    #[must_use]
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// The job's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which attempt this is: 1 for the first run, 2 for the first retry, …
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// Whether the worker has been asked to stop. A long handler may check it and wrap up; the
    /// worker waits for running jobs until its grace period ends.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Completes when the worker is asked to stop.
    pub async fn shutdown(&self) {
        self.shutdown.cancelled().await;
    }
}
