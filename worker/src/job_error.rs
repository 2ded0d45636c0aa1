//! [`JobError`]: how a handler says it failed, and what should happen next.

use std::fmt;
use std::time::Duration;

/// A handler's failure, with what the worker should do about it.
///
/// Any error converts into it, so handlers can use `?`: `std::fs::read(path)?`; such a failure is
/// retried if the job's retry policy has attempts left. The message is the error with its chain
/// of causes (`outer: inner`).
#[derive(Debug)]
pub struct JobError {
    message: String,
    next: Next,
}

/// What the worker does after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Retry after the policy's backoff, if attempts remain.
    Retry,
    /// Retry after this delay, if attempts remain.
    RetryAfter(Duration),
    /// Do not retry: the failure is final.
    Fail,
}

impl JobError {
    /// A failure that is retried by the job's policy (same as [`JobError::retry`]).
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), next: Next::Retry }
    }

    /// A failure worth retrying after the policy's backoff, if attempts remain.
    #[must_use]
    pub fn retry(message: impl Into<String>) -> Self {
        Self::new(message)
    }

    /// A failure worth retrying after `delay` (e.g. a rate limit's `Retry-After`), if attempts
    /// remain.
    #[must_use]
    pub fn retry_after(delay: Duration, message: impl Into<String>) -> Self {
        Self { message: message.into(), next: Next::RetryAfter(delay) }
    }

    /// A failure that retrying cannot fix (bad data, a missing record): fail now.
    #[must_use]
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), next: Next::Fail }
    }

    /// The message.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn next(&self) -> Next {
        self.next
    }
}

impl<E: Into<anyhow::Error>> From<E> for JobError {
    fn from(error: E) -> Self {
        Self::new(format!("{:#}", error.into()))
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
