//! [`EventContext`]: what an event handler knows of the event it handles, besides its body.

use chrono::{DateTime, Utc};
use lepus::EventId;
use std::sync::Arc;

/// The event a handler is handling: take it as an argument (`ctx: EventContext`) of an event
/// handler. Deduplicate by [`EventContext::id`] (see [`crate::Seen`]): delivery is at least once.
#[derive(Debug, Clone)]
pub struct EventContext {
    id: EventId,
    name: Arc<str>,
    key: Option<String>,
    occurred_at: DateTime<Utc>,
    service: Arc<str>,
    retries: u32,
    replayed: bool,
}

impl EventContext {
    pub(crate) fn new(envelope: &lepus::Envelope, name: Arc<str>, service: Arc<str>) -> Self {
        Self {
            id: envelope.id.clone(),
            name,
            key: envelope.key.clone(),
            occurred_at: envelope.occurred_at,
            service,
            retries: envelope.retries,
            replayed: false,
        }
    }

    /// The event's id: the same on every delivery of this event, to every service.
    #[must_use]
    pub fn id(&self) -> &EventId {
        &self.id
    }

    /// The event's name (`orders.created`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The event's key, if it has one.
    #[must_use]
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// When the event happened, as its publisher said.
    #[must_use]
    pub fn occurred_at(&self) -> DateTime<Utc> {
        self.occurred_at
    }

    /// The service handling it.
    #[must_use]
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Which attempt this is: 1 for the first, 2 for the first retry, …
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// Whether the event comes from a new service's replay of the event stream (its history)
    /// rather than from its queue: a handler may skip side effects meant for fresh events only
    /// (an e-mail, say).
    #[must_use]
    pub fn replayed(&self) -> bool {
        self.replayed
    }

    /// The same context, for an event of the replay.
    pub(crate) fn in_replay(self) -> Self {
        Self { replayed: true, ..self }
    }

    /// The same context for the next attempt (an ordered partition retries in place).
    pub(crate) fn retried(&self, retries: u32) -> Self {
        Self { retries, ..self.clone() }
    }
}
