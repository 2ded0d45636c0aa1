//! [`JobContext`]: what a handler knows about the run it is part of.

use crate::event_context::EventContext;
use crate::states::States;
use lepus::JobId;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What a handler can know about its run: take it as an argument (`ctx: JobContext`).
#[derive(Debug, Clone)]
pub struct JobContext {
    id: JobId,
    name: Arc<str>,
    retries: u32,
    shutdown: CancellationToken,
    states: Arc<States>,
    /// The event being handled, when the run is an event handler's.
    event: Option<Arc<EventContext>>,
}

impl JobContext {
    pub(crate) fn new(
        id: JobId,
        name: Arc<str>,
        retries: u32,
        shutdown: CancellationToken,
        states: Arc<States>,
    ) -> Self {
        Self { id, name, retries, shutdown, states, event: None }
    }

    /// The same context, for a handler of `event`.
    #[must_use]
    pub(crate) fn with_event(mut self, event: Option<Arc<EventContext>>) -> Self {
        self.event = event;
        self
    }

    /// The event being handled, when this is an event handler's run (see
    /// [`crate::Subscription`]); `None` for a job.
    #[must_use]
    pub fn event(&self) -> Option<&EventContext> {
        self.event.as_deref()
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

    /// The application state of type `T` registered with [`crate::Worker::state`], if any. A
    /// handler can also take it as an argument: [`crate::State`].
    #[must_use]
    pub fn state<T: 'static>(&self) -> Option<&T> {
        self.states.get::<T>()
    }

    /// Completes when the worker is asked to stop.
    pub async fn shutdown(&self) {
        self.shutdown.cancelled().await;
    }
}
