//! The errors of the client and of everything else in this crate.

use crate::ids::{BatchId, JobId};
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
        /// Why, in words.
        reason: String,
        /// lapin's error, when the attempt got that far (not for a timeout).
        #[source]
        source: Option<Box<lapin::Error>>,
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
    #[error("cannot {action} {what}: {source}")]
    Serde {
        /// `encode` or `decode`.
        action: &'static str,
        /// What was being converted.
        what: String,
        /// The serializer's error.
        source: serde_json::Error,
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
    /// The TLS settings cannot be used (a file is missing, unreadable or not PEM).
    #[error("TLS: {0}")]
    Tls(String),
    /// The metrics and health endpoint cannot listen on its address.
    #[error("cannot serve /metrics, /livez and /readyz on {address}: {source}")]
    Listen {
        /// The address asked for.
        address: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// No progress of that batch is in the progress stream: never sent, not tracked yet (no
    /// worker runs), or older than the retention.
    #[error(
        "no batch {0} is known to the broker: no progress of it in the stream lepus.batch.progress (never sent, no worker has tracked it yet, or older than the workers' batch_retention)"
    )]
    UnknownBatch(BatchId),
    /// The progress stream exists with another retention than this worker's.
    #[error(
        "the stream lepus.batch.progress exists with other arguments than batch_retention = {retention} asks ({reason}); give every worker of this broker the same batch_retention, or delete the stream to change it"
    )]
    BatchRetention {
        /// The retention asked for, as the broker's `x-max-age`.
        retention: String,
        /// The broker's words.
        reason: String,
    },
    /// The event stream exists with another retention than this process's [`crate::EventLog`].
    #[error(
        "the stream lepus.events.log exists with other arguments than this process asks (x-max-age {max_age}, x-max-length-bytes {max_bytes}): {reason}; give every client and worker of this broker the same event log settings, or delete the stream to change them"
    )]
    EventLog {
        /// The `x-max-age` asked for.
        max_age: String,
        /// The `x-max-length-bytes` asked for.
        max_bytes: u64,
        /// The broker's words.
        reason: String,
    },
    /// The client was closed while waiting for a result.
    #[error("the client was closed before the result of job {0} arrived")]
    Closed(JobId),
    /// A unique job was not enqueued: job `existing` holds its key (see [`crate::Unique`]).
    #[error("not enqueued: job {existing} holds unique key {key:?}")]
    Duplicate {
        /// The key.
        key: String,
        /// The job that holds it.
        existing: JobId,
    },
    /// A unique job cannot be sent this way, or its lock could not be taken (see
    /// [`crate::Unique`]).
    #[error("unique key {key:?}: {reason}")]
    UniqueLock {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to tell a person whose broker cannot be reached.
pub const UNREACHABLE_HINT: &str = "Is RabbitMQ running? Start it with `rabbitmq-server -detached` (install it with `apt-get install rabbitmq-server`), or point LEPUS_AMQP_URL (or --amqp-url) at your broker.";

/// What to tell a person whose TLS connection failed.
pub(crate) const TLS_HINT: &str = "The TLS connection failed. Check that the broker's certificate is signed by a CA this process trusts (tls_ca_file, or cacertfile= in the URL), that its name matches the URL's host, that the port is the broker's amqps:// port, and, if the broker verifies clients, the client certificate and key (tls_cert_file and tls_key_file).";

impl Error {
    /// The AMQP reply code with which the broker refused what was asked (`NOT_FOUND` for a
    /// missing queue, `RESOURCE_LOCKED` for an exclusive queue another connection holds,
    /// `ACCESS_REFUSED` for a login it turned down, …); `None` when the broker did not answer
    /// with one (a timeout, a lost connection, an error of Lepus's own).
    #[must_use]
    pub fn reply_code(&self) -> Option<ReplyCode> {
        match self {
            Error::Amqp { source, .. } => ReplyCode::of(source),
            Error::Connect { source: Some(source), .. } => ReplyCode::of(source),
            _ => None,
        }
    }

    /// What a person can do about an error connecting to the broker: check the TLS files when
    /// the TLS handshake failed or a TLS file is unusable; otherwise whether RabbitMQ runs where
    /// the URL points. Over `amqps://`, a connection the broker resets or ends right after the
    /// handshake counts as a TLS failure too: under TLS 1.3 the client's side of the handshake
    /// is done before the broker checks the client certificate, so a refused (or missing) one
    /// shows up as a reset or an early end rather than as an alert, depending on timing.
    #[must_use]
    pub fn hint(&self) -> &'static str {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, InvalidData, UnexpectedEof};
        let tls_failure = |url: &str, source: &lapin::Error| match source.kind() {
            lapin::ErrorKind::IOError(io) => {
                io.kind() == InvalidData
                    || (url.starts_with("amqps://")
                        && matches!(io.kind(), ConnectionReset | ConnectionAborted | UnexpectedEof | BrokenPipe))
            }
            _ => false,
        };
        match self {
            Error::Tls(_) => TLS_HINT,
            Error::Connect { url, source: Some(source), .. } if tls_failure(url, source) => TLS_HINT,
            _ => UNREACHABLE_HINT,
        }
    }

    pub(crate) fn serde(action: &'static str, what: impl Into<String>) -> impl FnOnce(serde_json::Error) -> Self {
        move |source| Error::Serde { action, what: what.into(), source }
    }

    pub(crate) fn amqp(operation: &'static str) -> impl FnOnce(lapin::Error) -> Self {
        move |source| Error::Amqp { operation, source }
    }

    pub(crate) fn timeout(what: &'static str, after: Duration) -> impl FnOnce(tokio::time::error::Elapsed) -> Self {
        move |_| Error::Timeout { what, after }
    }
}

/// An AMQP reply code: how the broker said no. Lepus decides what to do by these codes, never by
/// the words of an error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReplyCode {
    /// 403: the login, virtual host or operation is not allowed.
    AccessRefused,
    /// 404: no such queue or exchange.
    NotFound,
    /// 405: an exclusive queue that another connection holds.
    ResourceLocked,
    /// 406: declared with other arguments, or an unknown delivery tag.
    PreconditionFailed,
    /// 530: the virtual host does not exist (at connection open), or a similar refusal.
    NotAllowed,
    /// Any other code.
    Other(u16),
}

impl ReplyCode {
    /// The code of an error the broker sent, if `error` is one.
    #[must_use]
    pub fn of(error: &lapin::Error) -> Option<Self> {
        match error.kind() {
            lapin::ErrorKind::ProtocolError(amqp) => Some(Self::from(amqp.get_id())),
            _ => None,
        }
    }

    /// The numeric code.
    #[must_use]
    pub fn code(self) -> u16 {
        match self {
            ReplyCode::AccessRefused => 403,
            ReplyCode::NotFound => 404,
            ReplyCode::ResourceLocked => 405,
            ReplyCode::PreconditionFailed => 406,
            ReplyCode::NotAllowed => 530,
            ReplyCode::Other(code) => code,
        }
    }
}

impl From<u16> for ReplyCode {
    fn from(code: u16) -> Self {
        match code {
            403 => ReplyCode::AccessRefused,
            404 => ReplyCode::NotFound,
            405 => ReplyCode::ResourceLocked,
            406 => ReplyCode::PreconditionFailed,
            530 => ReplyCode::NotAllowed,
            other => ReplyCode::Other(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind::{ConnectionRefused, ConnectionReset, InvalidData};

    fn connect(url: &str, kind: std::io::ErrorKind) -> Error {
        let source = lapin::Error::from(lapin::ErrorKind::IOError(std::sync::Arc::new(kind.into())));
        Error::Connect { url: url.to_owned(), reason: "failed".to_owned(), source: Some(Box::new(source)) }
    }

    #[test]
    fn a_reset_over_amqps_is_a_tls_failure_and_a_refusal_is_an_unreachable_broker() {
        assert_eq!(connect("amqps://guest:***@localhost:5671/%2f", ConnectionReset).hint(), TLS_HINT);
        assert_eq!(connect("amqps://guest:***@localhost:5671/%2f", InvalidData).hint(), TLS_HINT);
        assert_eq!(connect("amqps://guest:***@localhost:5671/%2f", ConnectionRefused).hint(), UNREACHABLE_HINT);
        assert_eq!(connect("amqp://guest:***@localhost:5672/%2f", ConnectionReset).hint(), UNREACHABLE_HINT);
    }
}
