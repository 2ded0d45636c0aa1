//! The [`Job`] trait: a job's name, its typed input and output, and its run options.

use crate::retry::RetryPolicy;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// A job type: the input is the implementing type itself, serialized to Celery `args`/`kwargs`
/// by the rules in [`crate::protocol::Arguments`].
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Add { a: i64, b: i64 }
///
/// impl lepus::Job for Add {
///     const NAME: &'static str = "demo.add";
///     type Output = i64;
/// }
/// ```
pub trait Job: Serialize + DeserializeOwned + Send + 'static {
    /// The task name on the wire (Celery's `task` header). Must be unique per worker.
    const NAME: &'static str;
    /// The queue a job is sent to unless the request names another.
    const QUEUE: &'static str = crate::topology::DEFAULT_QUEUE;
    /// What a successful run returns.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// How failures of this job are retried unless the request says otherwise. Default: no retry.
    #[must_use]
    fn retry_policy() -> RetryPolicy {
        RetryPolicy::default()
    }

    /// How long one run may take before it is cancelled, unless the request says otherwise.
    /// Default: no limit.
    #[must_use]
    fn time_limit() -> Option<Duration> {
        None
    }

    /// How many jobs of this type may start per period across all workers (counted under the
    /// task name), unless the request says otherwise. Default: no limit. See [`crate::Rate`].
    #[must_use]
    fn rate_limit() -> Option<crate::rate::Rate> {
        None
    }
}
