//! The errors of the client and of everything else in this crate.

use crate::job::JobId;
use crate::protocol::ExceptionInfo;
use std::time::Duration;

/// What went wrong talking to the broker or with a job's result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker could not be reached or refused the connection.
    #[error("cannot connect to RabbitMQ at {url}: {reason}")]
    Connect {
        /// The broker address, with the password masked.
        url: String,
        /// Why.
        reason: String,
    },
    /// The AMQP URL is not valid.
    #[error("invalid AMQP URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, with the password masked.
        url: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A broker operation failed (channel or connection error).
    #[error("broker error during {operation}: {source}")]
    Amqp {
        /// What was being done.
        operation: &'static str,
        /// The AMQP error.
        source: lapin::Error,
    },
    /// A published message reached no queue.
    #[error(
        "message to exchange {exchange:?} with routing key {routing_key:?} is unroutable ({reason}): no such queue; start a worker on it or declare it first"
    )]
    Unroutable {
        /// The exchange it was sent to (`""` is the default exchange).
        exchange: String,
        /// Its routing key (the queue name, for the default exchange).
        routing_key: String,
        /// The broker's reply text.
        reason: String,
    },
    /// The broker refused to take responsibility for a published message.
    #[error("the broker rejected the message to {routing_key:?} (publisher nack)")]
    Nacked {
        /// The message's routing key.
        routing_key: String,
    },
    /// Something did not happen in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// How long.
        after: Duration,
    },
    /// A name (queue, job) is not acceptable.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// What kind of name.
        kind: &'static str,
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A delay longer than the cascade holds.
    #[error("a delay of {delay:?} is longer than the longest the broker holds ({max:?})")]
    InvalidDelay {
        /// The delay asked for.
        delay: Duration,
        /// The longest possible.
        max: Duration,
    },
    /// A job's input or output could not be (de)serialized.
    #[error("cannot {action} {what}: {reason}")]
    Serde {
        /// `encode` or `decode`.
        action: &'static str,
        /// What was being converted.
        what: String,
        /// The serializer's message.
        reason: String,
    },
    /// The message is larger than the configured limit.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The job ran and failed.
    #[error("job {id} failed: {}: {}", exception.exc_type, exception.message())]
    JobFailed {
        /// The job's id.
        id: JobId,
        /// The error, as Celery serializes exceptions.
        exception: Box<ExceptionInfo>,
        /// The trace the worker sent, if any.
        traceback: Option<Box<str>>,
    },
    /// The job was not run (revoked or expired).
    #[error("job {id} was not run: {}", exception.message())]
    JobRevoked {
        /// The job's id.
        id: JobId,
        /// Why.
        exception: Box<ExceptionInfo>,
    },
    /// No batch of that id exists (or its progress expired).
    #[error("no batch {0} is known to the broker")]
    UnknownBatch(crate::batch::BatchId),
    /// The client was closed while waiting for a result.
    #[error("the client was closed before the result of job {0} arrived")]
    Closed(JobId),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn amqp(operation: &'static str) -> impl FnOnce(lapin::Error) -> Self {
        move |source| Error::Amqp { operation, source }
    }

    pub(crate) fn timeout(what: &'static str, after: Duration) -> impl FnOnce(tokio::time::error::Elapsed) -> Self {
        move |_| Error::Timeout { what, after }
    }
}
