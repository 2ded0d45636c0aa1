//! Headers and properties that Lepus's own plumbing reads and writes: string headers of any AMQP
//! string type, a copy of a table without some headers, the properties of Lepus's JSON records,
//! and this process's node name (the `origin` of what it sends, the `worker` of its results).

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use std::sync::OnceLock;

/// The content type Lepus sends and accepts.
pub const CONTENT_TYPE: &str = "application/json";

/// A copy of `headers` (none: an empty table) without the headers named in `names`.
pub fn without(headers: Option<&FieldTable>, names: &[&str]) -> FieldTable {
    let Some(headers) = headers else { return FieldTable::default() };
    let kept = headers.inner().iter().filter(|(name, _)| !names.contains(&name.as_str()));
    FieldTable::from(
        kept.map(|(name, value)| (name.clone(), value.clone())).collect::<std::collections::BTreeMap<_, _>>(),
    )
}

/// Reads a header as a string, whatever AMQP string type the sender used.
pub fn header_str<'a>(headers: &'a FieldTable, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ShortString(s) => Some(s.as_str().into()),
        _ => None,
    }
}

/// Sets a string header.
pub fn set_header(headers: &mut FieldTable, name: &str, value: &str) {
    headers.insert(ShortString::from(name), AMQPValue::LongString(LongString::from(value)));
}

/// Properties of Lepus's own JSON records (batch records and snapshots, schedule state):
/// persistent, `application/json`.
#[must_use]
pub fn persistent_json() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2).with_content_type(CONTENT_TYPE.into())
}

/// This process's node name, `hostname:pid`: Celery's `origin` header and the result's `worker`.
#[must_use]
pub fn node_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        format!("{host}:{}", std::process::id())
    })
}
