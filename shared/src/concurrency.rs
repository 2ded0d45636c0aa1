//! [`Concurrency`]: a key and a limit, "at most `limit` jobs with this key run at once, across
//! all workers", and how it travels on a task message (the headers `x-lepus-concurrency-key` and
//! `x-lepus-concurrency-limit`, which Celery ignores and a Python client sets with
//! `apply_async(headers=...)`). The slots that enforce it live in the broker (see the worker's
//! `slots` module and `topology/slots.rs`).

use crate::error::{Error, Result};
use crate::protocol::amqp_value::to_json;
use crate::protocol::headers::{header_str, set_header};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;

/// Header: the concurrency key of a job (a string).
pub const CONCURRENCY_KEY_HEADER: &str = "x-lepus-concurrency-key";
/// Header: how many jobs with that key may run at once (a whole number, or its decimal digits
/// as a string).
pub const CONCURRENCY_LIMIT_HEADER: &str = "x-lepus-concurrency-limit";

/// The longest key, in bytes (it is part of a queue name).
pub const MAX_CONCURRENCY_KEY: usize = 128;
/// The highest limit: a key's slot queue is filled with `limit` messages when it is created.
pub const MAX_CONCURRENCY_LIMIT: u32 = 1000;

/// At most `limit` jobs with `key` run at the same time, across every worker of the broker.
///
/// Set it per request with [`crate::Request::concurrency_key`], or per job type from its input
/// with [`crate::Job::concurrency`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Concurrency {
    /// What the jobs share (a tenant id, an API account…).
    pub key: String,
    /// How many of them may run at once, 1 to [`MAX_CONCURRENCY_LIMIT`].
    pub limit: u32,
}

impl Concurrency {
    /// At most `limit` jobs with `key` at once. Checked when the request is sent.
    #[must_use]
    pub fn new(key: impl Into<String>, limit: u32) -> Self {
        Self { key: key.into(), limit }
    }

    /// Checks the key (1 to 128 bytes, no white space or control characters) and the limit
    /// (1 to 1000).
    pub fn validate(&self) -> Result<()> {
        let reason = if self.key.is_empty() {
            "must not be empty"
        } else if self.key.len() > MAX_CONCURRENCY_KEY {
            "longer than 128 bytes"
        } else if self.key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            "must not contain white space or control characters"
        } else if !(1..=MAX_CONCURRENCY_LIMIT).contains(&self.limit) {
            "its limit must be between 1 and 1000"
        } else {
            return Ok(());
        };
        Err(Error::InvalidName { kind: "concurrency key", name: self.key.clone(), reason })
    }

    /// Writes the two headers.
    pub(crate) fn write(&self, headers: &mut FieldTable) {
        set_header(headers, CONCURRENCY_KEY_HEADER, &self.key);
        headers.insert(CONCURRENCY_LIMIT_HEADER.into(), AMQPValue::LongLongInt(i64::from(self.limit)));
    }

    /// The concurrency a message's headers ask for: none when neither header is there, an error
    /// in words when one is missing or malformed (a message carrying it is dead-lettered, not
    /// run without its limit).
    pub fn from_headers(headers: Option<&FieldTable>) -> std::result::Result<Option<Self>, String> {
        let Some(headers) = headers else { return Ok(None) };
        let present = |name: &str| headers.inner().get(name).is_some_and(|v| !matches!(v, AMQPValue::Void));
        match (present(CONCURRENCY_KEY_HEADER), present(CONCURRENCY_LIMIT_HEADER)) {
            (false, false) => return Ok(None),
            (true, false) => {
                return Err(format!("header `{CONCURRENCY_KEY_HEADER}` without `{CONCURRENCY_LIMIT_HEADER}`"));
            }
            (false, true) => {
                return Err(format!("header `{CONCURRENCY_LIMIT_HEADER}` without `{CONCURRENCY_KEY_HEADER}`"));
            }
            (true, true) => {}
        }
        let key = header_str(headers, CONCURRENCY_KEY_HEADER)
            .ok_or_else(|| format!("header `{CONCURRENCY_KEY_HEADER}`: not a string"))?
            .into_owned();
        let value = headers.inner().get(CONCURRENCY_LIMIT_HEADER).map(to_json).unwrap_or(Value::Null);
        let limit = match &value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        }
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| (1..=MAX_CONCURRENCY_LIMIT).contains(n))
        .ok_or_else(|| {
            format!(
                "header `{CONCURRENCY_LIMIT_HEADER}`: {value} is not a whole number from 1 to {MAX_CONCURRENCY_LIMIT}"
            )
        })?;
        let concurrency = Self { key, limit };
        concurrency.validate().map_err(|e| format!("header `{CONCURRENCY_KEY_HEADER}`: {e}"))?;
        Ok(Some(concurrency))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::LongString;

    fn headers(key: Option<AMQPValue>, limit: Option<AMQPValue>) -> FieldTable {
        let mut table = FieldTable::default();
        if let Some(key) = key {
            table.insert(CONCURRENCY_KEY_HEADER.into(), key);
        }
        if let Some(limit) = limit {
            table.insert(CONCURRENCY_LIMIT_HEADER.into(), limit);
        }
        table
    }

    fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s))
    }

    #[test]
    fn headers_round_trip() {
        let mut table = FieldTable::default();
        Concurrency::new("tenant-42", 2).write(&mut table);
        assert_eq!(Concurrency::from_headers(Some(&table)), Ok(Some(Concurrency::new("tenant-42", 2))));
        assert_eq!(Concurrency::from_headers(Some(&FieldTable::default())), Ok(None));
        assert_eq!(Concurrency::from_headers(None), Ok(None));
    }

    #[test]
    fn python_ints_and_digit_strings_are_limits() {
        for limit in [AMQPValue::LongInt(3), AMQPValue::ShortShortInt(3), text("3"), text(" 3 ")] {
            let table = headers(Some(text("k")), Some(limit));
            assert_eq!(Concurrency::from_headers(Some(&table)), Ok(Some(Concurrency::new("k", 3))));
        }
    }

    #[test]
    fn malformed_headers_are_errors_in_words() {
        let cases = [
            (headers(Some(text("k")), Some(text("abc"))), "\"abc\" is not a whole number"),
            (headers(Some(text("k")), Some(AMQPValue::LongInt(0))), "0 is not a whole number"),
            (headers(Some(text("k")), Some(AMQPValue::LongInt(-2))), "-2 is not"),
            (headers(Some(text("k")), Some(AMQPValue::LongInt(1001))), "1001 is not"),
            (headers(Some(text("k")), Some(AMQPValue::Double(1.5))), "1.5 is not"),
            (headers(Some(text("k")), None), "without `x-lepus-concurrency-limit`"),
            (headers(None, Some(AMQPValue::LongInt(2))), "without `x-lepus-concurrency-key`"),
            (headers(Some(AMQPValue::LongInt(7)), Some(AMQPValue::LongInt(2))), "not a string"),
            (headers(Some(text("")), Some(AMQPValue::LongInt(2))), "must not be empty"),
            (headers(Some(text("a b")), Some(AMQPValue::LongInt(2))), "white space"),
        ];
        for (table, expected) in cases {
            let error = Concurrency::from_headers(Some(&table)).expect_err(expected);
            assert!(error.contains(expected), "{error:?} should say {expected:?}");
        }
    }

    #[test]
    fn requests_check_key_and_limit() {
        assert!(Concurrency::new("tenant-42", 1).validate().is_ok());
        assert!(Concurrency::new("tenant-42", 1000).validate().is_ok());
        assert!(Concurrency::new("tenant-42", 0).validate().is_err());
        assert!(Concurrency::new("x".repeat(129), 1).validate().is_err());
    }
}
