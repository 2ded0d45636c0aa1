//! [`Request`]: what to run (a typed job or a task name with raw arguments), where to send it,
//! and what follows it (a chain, links; see `canvas.rs`).

mod canvas;
mod message;

use crate::concurrency::Concurrency;
use crate::error::Result;
use crate::ids::JobId;
use crate::job::Job;
use crate::priority::Priority;
use crate::protocol::Arguments;
use crate::retry::RetryPolicy;
use crate::topology::DEFAULT_QUEUE;
use crate::unique::Unique;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

/// A job to send, with its routing and options. `O` is the type its result decodes into.
///
/// A typed job converts into a request (`client.enqueue(Add { a: 1, b: 2 })`); build one to set
/// options: `Request::new(job).queue("emails")`. [`Request::task`] sends by name with raw
/// arguments, for jobs with no Rust type (a Python task, say).
pub struct Request<O = Value> {
    task: Cow<'static, str>,
    arguments: Result<Arguments, serde_json::Error>,
    queue: Cow<'static, str>,
    /// The tier of `queue` it goes to (see `topology::tier_name`).
    priority: Priority,
    id: Option<JobId>,
    start: Option<Start>,
    expires: Option<Start>,
    retry: Option<RetryPolicy>,
    time_limit: Option<Duration>,
    /// At most this many jobs with its key run at once (see [`Concurrency`]).
    concurrency: Option<Concurrency>,
    /// The rate limit and its key (`x-lepus-rate-limit`, `x-lepus-rate-key`).
    rate: Option<crate::rate::Rate>,
    rate_key: Option<String>,
    /// Sent after a success with the output as first argument (Celery's `link`).
    callbacks: Vec<Request>,
    /// Sent after a final failure with the job's id as first argument (`link_error`).
    errbacks: Vec<Request>,
    /// Run one after the other after this job, each with the previous output first (`chain`).
    steps: Vec<Request>,
    /// As a follow-up, it takes no result (Celery's immutable signature, `.si()`).
    immutable: bool,
    /// Enqueued only while no job with this key is queued or running (see [`Unique`]).
    unique: Option<Unique>,
    output: PhantomData<fn() -> O>,
}

/// A point in time given as is or relative to the moment the request is sent.
#[derive(Debug, Clone, Copy)]
enum Start {
    In(Duration),
    At(DateTime<Utc>),
}

impl Start {
    fn resolve(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Start::In(delay) => now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX),
            Start::At(at) => at,
        }
    }
}

impl<O> fmt::Debug for Request<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("task", &self.task)
            .field("queue", &self.queue)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<J: Job> From<J> for Request<J::Output> {
    fn from(job: J) -> Self {
        let unique = job.unique();
        Self {
            unique,
            concurrency: job.concurrency(),
            task: Cow::Borrowed(J::NAME),
            arguments: Arguments::from_input(&job),
            queue: Cow::Borrowed(J::QUEUE),
            priority: J::priority(),
            ..Self::blank()
        }
    }
}

impl Request<Value> {
    /// A request for the job named `task` with raw arguments, sent to the default queue; its
    /// result decodes as JSON.
    #[must_use]
    pub fn task(task: impl Into<String>, arguments: Arguments) -> Self {
        Self { task: Cow::Owned(task.into()), arguments: Ok(arguments), ..Self::blank() }
    }
}

impl<O> Request<O> {
    /// A request for a typed job.
    #[must_use]
    pub fn new<J: Job<Output = O>>(job: J) -> Self {
        job.into()
    }

    /// Sends the job to `queue` instead of the job's default queue.
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Cow::Owned(queue.into());
        self
    }

    /// Sends the job to tier `priority` of its queue: `<queue>.high`, `<queue>` itself
    /// ([`Priority::Normal`]) or `<queue>.low`, instead of the job type's tier
    /// ([`Job::priority`]). A worker consuming tiers (its `priorities` setting) takes higher tiers
    /// first; one without consumes only `<queue>`.
    #[must_use]
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Uses `id` as the job id instead of a random one.
    #[must_use]
    pub fn id(mut self, id: impl Into<JobId>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Runs the job no earlier than `delay` after it is sent. The broker holds it meanwhile
    /// (1/8 s resolution, rounded up); no worker keeps it.
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.start = Some(Start::In(delay));
        self
    }

    /// Runs the job no earlier than `at` (any time zone).
    #[must_use]
    pub fn at<Tz: TimeZone>(mut self, at: DateTime<Tz>) -> Self {
        self.start = Some(Start::At(at.with_timezone(&Utc)));
        self
    }

    /// Does not run the job if it has not started within `expires` after it is sent; the caller
    /// then gets a `REVOKED` result.
    #[must_use]
    pub fn expires_in(mut self, expires: Duration) -> Self {
        self.expires = Some(Start::In(expires));
        self
    }

    /// Does not run the job if it has not started by `at`.
    #[must_use]
    pub fn expires_at<Tz: TimeZone>(mut self, at: DateTime<Tz>) -> Self {
        self.expires = Some(Start::At(at.with_timezone(&Utc)));
        self
    }

    /// Retries this job by `policy` instead of its job type's policy.
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Cancels the job if it runs longer than `limit` (Celery's hard `time_limit`).
    #[must_use]
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// Enqueues the job only if no job with `key` is queued or running (nor was enqueued less
    /// than `ttl` ago and still holds it); otherwise enqueues nothing and returns that job's id.
    /// See [`Unique`] and the README's *Unique jobs* for the exact guarantee.
    #[must_use]
    pub fn unique(self, key: impl Into<String>, ttl: Duration) -> Self {
        self.unique_by(Unique::new(key, ttl))
    }

    /// Like [`Request::unique`], but a duplicate fails with [`Error::Duplicate`](crate::Error::Duplicate).
    #[must_use]
    pub fn unique_or_error(self, key: impl Into<String>, ttl: Duration) -> Self {
        self.unique_by(Unique::new(key, ttl).or_error())
    }

    /// Makes the job unique by `unique` (or, with `None`, not unique, whatever its job type says).
    #[must_use]
    pub fn unique_by(mut self, unique: impl Into<Option<Unique>>) -> Self {
        self.unique = unique.into();
        self
    }

    /// Takes the uniqueness out, for the client that takes the lock before it sends the message.
    pub(crate) fn take_unique(&mut self) -> Option<Unique> {
        self.unique.take()
    }

    /// Fails if the request is unique: only the client's enqueue path takes a lock.
    fn refuse_unique(&self) -> Result<()> {
        match &self.unique {
            None => Ok(()),
            Some(unique) => Err(crate::error::Error::UniqueLock {
                key: unique.key().to_owned(),
                reason: "a unique job is sent only by Client::enqueue, submit or call (not in a batch, enqueue_many, a chain, a link or a transaction)",
            }),
        }
    }

    /// Lets at most `limit` jobs with `key` run at the same time, across all workers; the others
    /// wait (they are not failed). Overrides the job type's [`Job::concurrency`]. The key and the
    /// limit (1 to 1000) are checked when the request is sent.
    #[must_use]
    pub fn concurrency_key(mut self, key: impl Into<String>, limit: u32) -> Self {
        self.concurrency = Some(Concurrency::new(key, limit));
        self
    }

    /// Starts this job only within `rate` across all workers (instead of its job type's limit),
    /// counted under its task name unless [`Request::rate_key`] names another key. Sent as the
    /// `x-lepus-rate-limit` header.
    #[must_use]
    pub fn rate_limit(mut self, rate: crate::rate::Rate) -> Self {
        self.rate = Some(rate);
        self
    }

    /// Counts this job's rate limit (its own or its job type's) under `key` (a customer, say)
    /// instead of the task name: each key has a bucket of its own. Sent as `x-lepus-rate-key`.
    #[must_use]
    pub fn rate_key(mut self, key: impl Into<String>) -> Self {
        self.rate_key = Some(key.into());
        self
    }

    /// The same request with its result left as JSON.
    pub(crate) fn erase(self) -> Request<Value> {
        self.retyped()
    }

    /// The same request, its result decoded as `P`.
    fn retyped<P>(self) -> Request<P> {
        Request {
            task: self.task,
            arguments: self.arguments,
            queue: self.queue,
            priority: self.priority,
            id: self.id,
            start: self.start,
            expires: self.expires,
            retry: self.retry,
            time_limit: self.time_limit,
            concurrency: self.concurrency,
            rate: self.rate,
            rate_key: self.rate_key,
            callbacks: self.callbacks,
            errbacks: self.errbacks,
            steps: self.steps,
            immutable: self.immutable,
            unique: self.unique,
            output: PhantomData,
        }
    }

    /// Whether the sender chose the job id.
    pub(crate) fn has_id(&self) -> bool {
        self.id.is_some()
    }

    fn blank() -> Self {
        Self {
            task: Cow::Borrowed(""),
            arguments: Ok(Arguments::default()),
            queue: Cow::Borrowed(DEFAULT_QUEUE),
            priority: Priority::Normal,
            id: None,
            start: None,
            expires: None,
            retry: None,
            time_limit: None,
            concurrency: None,
            rate: None,
            rate_key: None,
            callbacks: Vec::new(),
            errbacks: Vec::new(),
            steps: Vec::new(),
            immutable: false,
            unique: None,
            output: PhantomData,
        }
    }
}
