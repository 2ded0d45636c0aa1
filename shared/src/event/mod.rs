//! Data events between services: "order 42 was created", published once and handled by every
//! service that subscribes (see the README's *Events*). Not Celery's monitoring events, which
//! are `crate::protocol::events` and the worker's `events` module.
//!
//! An event type is a serde type with a name ([`Event`]); [`Publish`] is one event about to be
//! sent, with its key and time; the [`Envelope`] is an event on the wire (see `envelope.rs`),
//! decoded alike from a service queue's delivery and from the event stream.

mod envelope;

pub use envelope::{
    EVENT_HEADER, EVENT_ID_HEADER, Envelope, EventDecodeError, KEY_HEADER, OCCURRED_AT_HEADER, slot_of,
};

use crate::error::{Error, Result};
use crate::ids::EventId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An event type: the body is the implementing type itself, as JSON.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct OrderCreated { order: u64, total_cents: u64 }
///
/// impl lepus::Event for OrderCreated {
///     const NAME: &'static str = "orders.created";
///     fn key(&self) -> Option<String> { Some(self.order.to_string()) }
/// }
/// ```
pub trait Event: Serialize + DeserializeOwned + Send + 'static {
    /// The event's name on the wire (its routing key, `x-lepus-event` header and `type`
    /// property): dot-separated words that services' patterns match (`orders.*`, `#.created`).
    const NAME: &'static str;

    /// What the event is about (an order id, say): events with the same key are handled in
    /// publish order by an ordered subscription. `None` (the default): no key.
    fn key(&self) -> Option<String> {
        None
    }
}

/// One event to publish, with what [`Event`] does not say: another key, the time it happened
/// (default: now), its id (default: a fresh UUID). `Client::publish` takes an event or this.
#[derive(Debug, Clone)]
pub struct Publish<E> {
    event: E,
    key: Option<Option<String>>,
    occurred_at: Option<DateTime<Utc>>,
    id: Option<EventId>,
}

impl<E: Event> Publish<E> {
    /// `event`, with its own key, happening now.
    #[must_use]
    pub fn new(event: E) -> Self {
        Self { event, key: None, occurred_at: None, id: None }
    }

    /// Sets the key (over [`Event::key`]); `None` for no key.
    #[must_use]
    pub fn key(mut self, key: Option<String>) -> Self {
        self.key = Some(key);
        self
    }

    /// Sets when the event happened.
    #[must_use]
    pub fn occurred_at(mut self, at: DateTime<Utc>) -> Self {
        self.occurred_at = Some(at);
        self
    }

    /// Sets the event's id (republishing an event keeps its id, so handlers dedupe it).
    #[must_use]
    pub fn id(mut self, id: EventId) -> Self {
        self.id = Some(id);
        self
    }

    /// The event on the wire, happening at `now` unless set.
    pub fn into_envelope(self, now: DateTime<Utc>) -> Result<Envelope> {
        validate_event_name(E::NAME)?;
        let key = self.key.unwrap_or_else(|| self.event.key());
        let body = serde_json::to_value(&self.event).map_err(Error::serde("encode", format!("event {}", E::NAME)))?;
        let mut envelope = Envelope::new(E::NAME, body, key, self.occurred_at.unwrap_or(now));
        if let Some(id) = self.id {
            envelope.set_id(id);
        }
        Ok(envelope)
    }
}

impl<E: Event> From<E> for Publish<E> {
    fn from(event: E) -> Self {
        Self::new(event)
    }
}

/// Checks that `name` can be an event name (a routing key): 1 to 255 bytes, no `*`, `#` or white
/// space.
pub fn validate_event_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() || name.len() > 255 {
        "must be 1 to 255 bytes"
    } else if name.contains(['*', '#']) || name.chars().any(char::is_whitespace) {
        "must not contain `*`, `#` or white space (those are for patterns)"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName { kind: "event", name: name.to_owned(), reason })
}
