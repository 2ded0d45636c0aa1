//! [`JobError`]: how a handler says it failed, what should happen next, and which exception a
//! Celery client sees.
//!
//! A handler may return any error: `anyhow::Result`, its own error type, or a `JobError`. Any
//! error is retried by the job's retry policy; to say otherwise, or to name the Python exception,
//! return a `JobError` (directly, through `?` in an `anyhow` handler, or as the source or context
//! of another error: the worker finds it anywhere in the chain).

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// A boxed error with its chain of causes, as handlers and extractors hand them over.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A handler's failure, with what the worker should do about it and how Celery clients see it.
///
/// ```
/// use lepus_worker::JobError;
/// use std::time::Duration;
///
/// fn check(width: u32) -> Result<u32, JobError> {
///     if width == 0 {
///         // Not retried; `except ValueError` catches it around `AsyncResult.get()` in Python.
///         return Err(JobError::permanent("width must be positive").exception("builtins.ValueError"));
///     }
///     Ok(width)
/// }
/// assert!(check(0).is_err());
/// let later = JobError::retry_after(Duration::from_secs(30), "rate limited");
/// assert_eq!(later.to_string(), "rate limited");
/// ```
#[derive(Debug)]
pub struct JobError {
    message: String,
    next: Next,
    /// `module.Class` (or a bare class name) of the exception Celery clients see.
    exception: Option<String>,
    source: Option<BoxError>,
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
        Self { message: message.into(), next: Next::Retry, exception: None, source: None }
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
        Self { next: Next::RetryAfter(delay), ..Self::new(message) }
    }

    /// A failure that retrying cannot fix (bad data, a missing record): fail now.
    #[must_use]
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { next: Next::Fail, ..Self::new(message) }
    }

    /// Any error, retried by the job's policy; it stays this one's source.
    #[must_use]
    pub fn from_error(error: impl Into<BoxError>) -> Self {
        let source = error.into();
        Self { message: source.to_string(), source: Some(source), ..Self::new("") }
    }

    /// The same failure with `error` as its cause (kept as [`std::error::Error::source`], shown
    /// in the logs and in the message Celery clients get).
    #[must_use]
    pub fn caused_by(mut self, error: impl Into<BoxError>) -> Self {
        self.source = Some(error.into());
        self
    }

    /// The exception Celery clients see: a Python class as `module.Class` (`builtins.ValueError`,
    /// `myapp.errors.ImageTooLarge`: the module must be imported in the client for Celery to use
    /// its class), or a bare name, for which Celery makes up a class of that name. Without it
    /// they see `JobError`.
    #[must_use]
    pub fn exception(mut self, class: impl Into<String>) -> Self {
        self.exception = Some(class.into());
        self
    }

    /// The message, without its causes.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The exception's `(module, class)` as Celery's result carries them (`exc_module`,
    /// `exc_type`): `(None, "JobError")` unless [`JobError::exception`] said otherwise.
    #[must_use]
    pub fn python_class(&self) -> (Option<&str>, &str) {
        match self.exception.as_deref() {
            None => (None, "JobError"),
            Some(class) => match class.rsplit_once('.') {
                Some((module, name)) if !module.is_empty() && !name.is_empty() => (Some(module), name),
                _ => (None, class),
            },
        }
    }

    /// The message followed by its causes, `outer: inner: innermost`.
    #[must_use]
    pub fn message_with_causes(&self) -> String {
        let mut text = self.message.clone();
        let mut cause = StdError::source(self);
        while let Some(error) = cause {
            let part = error.to_string();
            if !part.is_empty() && !text.ends_with(&part) {
                if !text.is_empty() {
                    text.push_str(": ");
                }
                text.push_str(&part);
            }
            cause = error.source();
        }
        text
    }

    pub(crate) fn next(&self) -> Next {
        self.next
    }

    /// The failure a handler's error stands for: retried by the policy, unless a `JobError` in
    /// its chain (the error itself, its context or a cause) says otherwise. The whole chain stays
    /// as the source.
    pub(crate) fn from_handler(error: anyhow::Error) -> Self {
        // The error itself or its context (anyhow sees through context), else any cause.
        let found = error
            .downcast_ref::<JobError>()
            .or_else(|| error.chain().find_map(|cause| cause.downcast_ref::<JobError>()));
        let (next, exception) = found.map_or((Next::Retry, None), |e| (e.next, e.exception.clone()));
        Self { message: error.to_string(), next, exception, source: Some(error.into()) }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for JobError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|source| source as &(dyn StdError + 'static))
    }
}

impl From<anyhow::Error> for JobError {
    /// An `anyhow` error, retried by the policy unless it carries a `JobError` in its chain.
    fn from(error: anyhow::Error) -> Self {
        Self::from_handler(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn a_job_error_keeps_its_source_and_shows_the_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = JobError::permanent("cannot read the report").caused_by(io);
        assert_eq!(error.to_string(), "cannot read the report");
        assert_eq!(error.source().map(ToString::to_string).as_deref(), Some("no such file"));
        assert_eq!(error.message_with_causes(), "cannot read the report: no such file");
        assert_eq!(error.next(), Next::Fail);
    }

    #[test]
    fn a_job_error_anywhere_in_a_handlers_chain_gives_its_directions() {
        let inner = JobError::retry_after(Duration::from_secs(9), "rate limited").exception("myapp.errors.Throttled");
        let wrapped = anyhow::Error::new(inner).context("calling the image service");
        let error = JobError::from_handler(wrapped);
        assert_eq!(error.next(), Next::RetryAfter(Duration::from_secs(9)));
        assert_eq!(error.python_class(), (Some("myapp.errors"), "Throttled"));
        assert_eq!(error.message_with_causes(), "calling the image service: rate limited");
    }

    #[test]
    fn a_job_error_given_as_context_gives_its_directions_too() {
        let io = std::io::Error::other("disk full");
        let error = JobError::from_handler(anyhow::Error::new(io).context(JobError::permanent("cannot save")));
        assert_eq!(error.next(), Next::Fail);
        assert_eq!(error.message_with_causes(), "cannot save: disk full");
    }

    #[test]
    fn any_other_error_is_retried_by_the_policy_with_its_whole_chain() {
        let parse = "x".parse::<u32>().context("reading the width").expect_err("not a number");
        let error = JobError::from_handler(parse);
        assert_eq!(error.next(), Next::Retry);
        assert_eq!(error.python_class(), (None, "JobError"));
        assert_eq!(error.message_with_causes(), "reading the width: invalid digit found in string");
        assert_eq!(JobError::from_handler(anyhow::Error::new(JobError::permanent("x"))).next(), Next::Fail);
    }

    #[test]
    fn exception_names_split_into_module_and_class() {
        assert_eq!(
            JobError::new("x").exception("builtins.ValueError").python_class(),
            (Some("builtins"), "ValueError")
        );
        assert_eq!(JobError::new("x").exception("ImageTooLarge").python_class(), (None, "ImageTooLarge"));
    }
}
