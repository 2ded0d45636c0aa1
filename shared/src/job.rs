//! The [`Job`] trait: a job's name, its typed input and output, and its run options.

use crate::concurrency::Concurrency;
use crate::priority::Priority;
use crate::retry::RetryPolicy;
use crate::unique::Unique;
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

    /// Whether this job is unique by a key (from its input, say), unless the request says
    /// otherwise ([`crate::Request::unique_by`]). Default: not unique.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use std::time::Duration;
    /// #[derive(Serialize, Deserialize)]
    /// struct SyncAccount { account: u64 }
    ///
    /// impl lepus::Job for SyncAccount {
    ///     const NAME: &'static str = "accounts.sync";
    ///     type Output = ();
    ///     fn unique(&self) -> Option<lepus::Unique> {
    ///         Some(lepus::Unique::new(format!("sync-{}", self.account), Duration::from_secs(600)))
    ///     }
    /// }
    /// ```
    #[must_use]
    fn unique(&self) -> Option<Unique> {
        None
    }

    /// How many jobs sharing a key (taken from this job's input, a tenant id say) may run at once
    /// across all workers, unless the request says otherwise. Default: no limit.
    #[must_use]
    fn concurrency(&self) -> Option<Concurrency> {
        None
    }

    /// The tier of its queue this job goes to unless the request says otherwise
    /// ([`crate::Request::priority`]). Default: [`Priority::Normal`], the queue itself.
    #[must_use]
    fn priority() -> Priority {
        Priority::Normal
    }

    /// How many jobs of this type may start per period across all workers (counted under the
    /// task name), unless the request says otherwise. Default: no limit. See [`crate::Rate`].
    #[must_use]
    fn rate_limit() -> Option<crate::rate::Rate> {
        None
    }
}
