//! [`Envelope`]: one event on the wire, and its encoding.
//!
//! The body is the event's JSON as is. Properties: `message_id` = the event id, `timestamp` =
//! when it happened (whole seconds), `type` = the event name, `content_type` =
//! `application/json`, `delivery_mode` 2. Headers: `x-lepus-event` (the name),
//! `x-lepus-event-id`, `x-lepus-occurred-at` (RFC 3339 with milliseconds, UTC), `x-lepus-key` (if
//! any) and `x-lepus-slot` (FNV-1a of the key, else of the id, modulo 64: [`slot_of`]). A
//! worker's retry adds Celery's `retries` and `eta`.
//!
//! Decoding takes what a plain AMQP publisher (kombu, say) may leave out from the properties:
//! the name from `type`, the id from `message_id`, the time from `timestamp`, and computes the
//! slot when its header is missing. [`Envelope::decode`] reads a service queue's delivery and a
//! stream message alike (both are properties and a body).

use crate::ids::EventId;
use crate::protocol::headers::{CONTENT_TYPE, header_str};
use crate::protocol::task::{iso8601, parse_time};
use crate::topology::{EVENT_SLOTS, SLOT_HEADER};
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde_json::Value;

/// Header: the event's name.
pub const EVENT_HEADER: &str = "x-lepus-event";
/// Header: the event's id.
pub const EVENT_ID_HEADER: &str = "x-lepus-event-id";
/// Header: when the event happened, RFC 3339.
pub const OCCURRED_AT_HEADER: &str = "x-lepus-occurred-at";
/// Header: the event's key, if it has one.
pub const KEY_HEADER: &str = "x-lepus-key";

/// An event as it travels: name, id, time, key and slot around the JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The event's id (`message_id`).
    pub id: EventId,
    /// Its name (`x-lepus-event`, `type`).
    pub name: String,
    /// When it happened (`x-lepus-occurred-at`, `timestamp`).
    pub occurred_at: DateTime<Utc>,
    /// What it is about (`x-lepus-key`).
    pub key: Option<String>,
    /// Its slot (`x-lepus-slot`): which partition of an ordered service takes it.
    pub slot: u16,
    /// The event itself.
    pub body: Value,
    /// Attempts a worker already made to handle it (Celery's `retries` header, set by a retry).
    pub retries: u32,
    /// Not to be handled before this (Celery's `eta`, set by a retry).
    pub eta: Option<DateTime<Utc>>,
}

/// Why a message is not an event Lepus can read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventDecodeError {
    /// The content type is not JSON.
    #[error("unsupported content type {0:?}: events are JSON")]
    ContentType(String),
    /// Something every event has is missing.
    #[error("not an event: no {0}")]
    Missing(&'static str),
    /// A header has a value of the wrong type or format.
    #[error("header `{name}`: {reason}")]
    Header {
        /// The header's name.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The body is not JSON.
    #[error("body is not JSON: {0}")]
    Body(String),
}

/// The slot of an event keyed `key` (or, without a key, of its id): FNV-1a (32 bits) over the
/// UTF-8 bytes, modulo [`EVENT_SLOTS`]. Stable across processes, versions and languages.
#[must_use]
pub fn slot_of(key: &str) -> u16 {
    let hash = key.bytes().fold(0x811c_9dc5_u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193));
    u16::try_from(hash % u32::from(EVENT_SLOTS)).unwrap_or_default()
}

impl Envelope {
    /// A fresh event (new id) named `name` with `body`, keyed `key`, that happened `occurred_at`.
    #[must_use]
    pub fn new(name: impl Into<String>, body: Value, key: Option<String>, occurred_at: DateTime<Utc>) -> Self {
        let id = EventId::random();
        let slot = slot_of(key.as_deref().unwrap_or(id.as_str()));
        Self { id, name: name.into(), occurred_at, key, slot, body, retries: 0, eta: None }
    }

    /// Gives the event another id (its slot follows when it has no key).
    pub fn set_id(&mut self, id: EventId) {
        if self.key.is_none() {
            self.slot = slot_of(id.as_str());
        }
        self.id = id;
    }

    /// The body and properties to publish.
    pub fn encode(&self) -> Result<(Vec<u8>, BasicProperties), serde_json::Error> {
        let body = serde_json::to_vec(&self.body)?;
        let text = |v: &str| AMQPValue::LongString(LongString::from(v));
        let mut headers = FieldTable::default();
        headers.insert(EVENT_HEADER.into(), text(&self.name));
        headers.insert(EVENT_ID_HEADER.into(), text(self.id.as_str()));
        headers.insert(OCCURRED_AT_HEADER.into(), text(&self.occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true)));
        if let Some(key) = &self.key {
            headers.insert(KEY_HEADER.into(), text(key));
        }
        headers.insert(SLOT_HEADER.into(), AMQPValue::LongLongInt(i64::from(self.slot)));
        if self.retries > 0 {
            headers.insert("retries".into(), AMQPValue::LongLongInt(i64::from(self.retries)));
        }
        if let Some(eta) = self.eta {
            headers.insert("eta".into(), text(&iso8601(eta)));
        }
        let mut properties = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_delivery_mode(2)
            .with_timestamp(u64::try_from(self.occurred_at.timestamp()).unwrap_or_default())
            .with_headers(headers);
        if let Ok(name) = ShortString::try_new(self.name.as_str()) {
            properties = properties.with_type(name);
        }
        if let Ok(id) = ShortString::try_new(self.id.as_str()) {
            properties = properties.with_message_id(id);
        }
        Ok((body, properties))
    }

    /// Reads an event from a message's properties and body (a delivery or a stream message).
    pub fn decode(properties: &BasicProperties, body: &[u8]) -> Result<Self, EventDecodeError> {
        if let Some(content_type) = properties.content_type().as_ref().filter(|t| t.as_str() != CONTENT_TYPE) {
            return Err(EventDecodeError::ContentType(content_type.to_string()));
        }
        let empty = FieldTable::default();
        let headers = properties.headers().as_ref().unwrap_or(&empty);
        let name = header_str(headers, EVENT_HEADER)
            .map(|n| n.into_owned())
            .or_else(|| properties.kind().as_ref().map(|k| k.to_string()))
            .filter(|n| !n.is_empty())
            .ok_or(EventDecodeError::Missing("name (header x-lepus-event or property type)"))?;
        let id = header_str(headers, EVENT_ID_HEADER)
            .map(|id| id.into_owned())
            .or_else(|| properties.message_id().as_ref().map(|id| id.to_string()))
            .filter(|id| !id.is_empty())
            .ok_or(EventDecodeError::Missing("id (header x-lepus-event-id or property message_id)"))?;
        let occurred_at = match header_str(headers, OCCURRED_AT_HEADER) {
            Some(at) => parse_time(&at).ok_or_else(|| EventDecodeError::Header {
                name: OCCURRED_AT_HEADER,
                reason: format!("not an RFC 3339 time: {at:?}"),
            })?,
            None => properties
                .timestamp()
                .and_then(|seconds| Utc.timestamp_opt(i64::try_from(seconds).ok()?, 0).single())
                .ok_or(EventDecodeError::Missing("time (header x-lepus-occurred-at or property timestamp)"))?,
        };
        let key = header_str(headers, KEY_HEADER).map(|k| k.into_owned());
        let slot = match headers.inner().get(SLOT_HEADER) {
            None => slot_of(key.as_deref().unwrap_or(&id)),
            Some(value) => {
                whole(value).and_then(|s| u16::try_from(s).ok()).filter(|s| *s < EVENT_SLOTS).ok_or_else(|| {
                    EventDecodeError::Header { name: SLOT_HEADER, reason: format!("not 0 to 63: {value:?}") }
                })?
            }
        };
        let retries =
            headers.inner().get("retries").and_then(whole).map_or(0, |r| u32::try_from(r).unwrap_or(u32::MAX));
        let eta = header_str(headers, "eta").and_then(|eta| parse_time(&eta));
        let body = serde_json::from_slice(body).map_err(|e| EventDecodeError::Body(e.to_string()))?;
        Ok(Self { id: EventId::from(id), name, occurred_at, key, slot, body, retries, eta })
    }
}

/// A header's value as a whole number, whatever integer type the sender used.
fn whole(value: &AMQPValue) -> Option<u64> {
    match value {
        AMQPValue::LongLongInt(i) => u64::try_from(*i).ok(),
        AMQPValue::LongInt(i) => u64::try_from(*i).ok(),
        AMQPValue::LongUInt(i) => Some(u64::from(*i)),
        AMQPValue::ShortInt(i) => u64::try_from(*i).ok(),
        AMQPValue::ShortUInt(i) => Some(u64::from(*i)),
        AMQPValue::ShortShortInt(i) => u64::try_from(*i).ok(),
        AMQPValue::ShortShortUInt(i) => Some(u64::from(*i)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_event_round_trips_and_its_slot_is_stable() {
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single().expect("a time");
        let event = Envelope::new("orders.created", json!({"order": 42}), Some("42".into()), at);
        let (body, properties) = event.encode().expect("encodes");
        assert_eq!(body, br#"{"order":42}"#);
        assert_eq!(properties.kind().as_ref().map(ShortString::as_str), Some("orders.created"));
        assert_eq!(properties.timestamp(), &Some(1_772_366_400));
        assert_eq!(Envelope::decode(&properties, &body), Ok(event.clone()));
        // As a Python publisher computes it (see the README).
        assert_eq!(slot_of("42"), u16::try_from(fnv_reference(b"42") % 64).expect("small"));
        assert_eq!(event.slot, slot_of("42"));
    }

    fn fnv_reference(bytes: &[u8]) -> u32 {
        let mut hash: u32 = 2_166_136_261;
        for byte in bytes {
            hash ^= u32::from(*byte);
            hash = hash.wrapping_mul(16_777_619);
        }
        hash
    }

    #[test]
    fn a_plain_amqp_event_is_read_from_its_properties() {
        let properties = BasicProperties::default()
            .with_type("orders.paid".into())
            .with_message_id("e-1".into())
            .with_timestamp(1_700_000_000);
        let event = Envelope::decode(&properties, br#"{"order": 7}"#).expect("decodes");
        assert_eq!((event.name.as_str(), event.id.as_str(), event.key), ("orders.paid", "e-1", None));
        assert_eq!(event.slot, slot_of("e-1"));
        assert_eq!(event.occurred_at.timestamp(), 1_700_000_000);

        let nameless = BasicProperties::default().with_message_id("e-2".into());
        assert!(matches!(Envelope::decode(&nameless, b"{}"), Err(EventDecodeError::Missing(_))));
        assert!(matches!(Envelope::decode(&properties, b"not json"), Err(EventDecodeError::Body(_))));
        let mut headers = FieldTable::default();
        headers.insert(SLOT_HEADER.into(), AMQPValue::LongLongInt(64));
        let bad_slot = properties.with_headers(headers);
        assert!(matches!(Envelope::decode(&bad_slot, b"{}"), Err(EventDecodeError::Header { .. })));
    }
}
