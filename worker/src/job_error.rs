//! [`JobError`]: how a handler says it failed.

use std::fmt;

/// A handler's failure. The worker turns it into a `FAILURE` result carrying the message.
///
/// Any error converts into it, so handlers can use `?`: `std::fs::read(path)?`. The message is
/// the error with its chain of causes (`outer: inner`).
#[derive(Debug)]
pub struct JobError {
    message: String,
}

impl JobError {
    /// A failure with this message.
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }

    /// The message.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: Into<anyhow::Error>> From<E> for JobError {
    fn from(error: E) -> Self {
        Self { message: format!("{:#}", error.into()) }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
