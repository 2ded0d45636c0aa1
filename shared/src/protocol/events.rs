//! Celery's monitoring events (what `celery events`, Flower and `-E` workers speak): one JSON
//! object per event on the `celeryev` topic exchange, its routing key the event's type with `.`
//! for `-` (`task.succeeded`), with the fields every event has (`hostname`, `utcoffset`, `pid`,
//! `clock`, `timestamp`, `type`) besides its own. Arguments, keyword arguments, results and
//! exceptions travel as Python reprs, as a Celery worker sends them.

use super::amqp_value::to_amqp;
use super::control::transient_json;
use lapin::BasicProperties;
use lapin::types::FieldTable;
use serde::ser::{SerializeMap, Serializer as _};
use serde_json::{Map, Value};

/// An event's type and its own fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `worker-heartbeat`, `task-succeeded`, …
    pub kind: &'static str,
    /// The fields of this kind of event (`uuid`, `result`, `runtime`, …), in the order they are
    /// written.
    pub fields: Vec<(&'static str, Value)>,
}

impl Event {
    /// An event of `kind` with `fields`.
    #[must_use]
    pub fn new(kind: &'static str, fields: Vec<(&'static str, Value)>) -> Self {
        Self { kind, fields }
    }

    /// Appends this event to `out` as one JSON object, as node `hostname` sends it, that
    /// happened at Unix time `timestamp`, Lamport clock `clock`: the common fields and its own.
    /// Written straight into the buffer, with no map built on the way.
    pub fn write_json(&self, out: &mut Vec<u8>, hostname: &str, clock: u64, timestamp: f64) {
        let mut serializer = serde_json::Serializer::new(out);
        // Writing into a Vec cannot fail, and every field is a JSON value already.
        let Ok(mut map) = serializer.serialize_map(Some(self.fields.len() + 6)) else { return };
        drop(map.serialize_entry("hostname", hostname));
        drop(map.serialize_entry("utcoffset", &0));
        drop(map.serialize_entry("pid", &std::process::id()));
        drop(map.serialize_entry("clock", &clock));
        drop(map.serialize_entry("timestamp", &timestamp));
        drop(map.serialize_entry("type", self.kind));
        for (key, value) in &self.fields {
            drop(map.serialize_entry(key, value));
        }
        drop(map.end());
    }

    /// This event as [`Event::write_json`] writes it, as a JSON value.
    #[must_use]
    pub fn to_json(&self, hostname: &str, clock: u64, timestamp: f64) -> Value {
        let mut out = Vec::new();
        self.write_json(&mut out, hostname, clock, timestamp);
        serde_json::from_slice(&out).unwrap_or(Value::Null)
    }

    /// The routing key (its type with `.` for `-`).
    #[must_use]
    pub fn routing_key(&self) -> String {
        self.kind.replace('-', ".")
    }
}

/// The routing key of a batch of task events in one message, as Celery buffers them.
pub const TASK_MULTI: &str = "task.multi";

/// The properties of an event message from node `hostname`.
#[must_use]
pub fn properties(hostname: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert("hostname".into(), to_amqp(&Value::from(hostname)));
    transient_json(headers)
}

/// A JSON value as Python's `repr` shows the same value: `'text'`, `True`, `None`, `[1, 2]`,
/// `{'a': 1}`.
#[must_use]
pub fn python_repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(&mut out, value);
    out
}

/// Keyword arguments as Python shows a dict: `{'a': 1}`.
#[must_use]
pub fn kwargs_repr(kwargs: &Map<String, Value>) -> String {
    let mut out = String::new();
    write_map(&mut out, kwargs);
    out
}

/// Positional arguments as Python shows a tuple: `(2, 3)`, `('x',)`, `()`.
#[must_use]
pub fn args_repr(args: &[Value]) -> String {
    let mut out = String::from("(");
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_repr(&mut out, arg);
    }
    if args.len() == 1 {
        out.push(',');
    }
    out.push(')');
    out
}

fn write_repr(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_map(out, map),
    }
}

fn write_map(out: &mut String, map: &Map<String, Value>) {
    out.push('{');
    for (i, (key, item)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_str(out, key);
        out.push_str(": ");
        write_repr(out, item);
    }
    out.push('}');
}

fn write_str(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_show_as_python_shows_them() {
        assert_eq!(args_repr(&[json!(2), json!(3)]), "(2, 3)");
        assert_eq!(args_repr(&[json!("boom")]), "('boom',)");
        assert_eq!(args_repr(&[]), "()");
        assert_eq!(
            python_repr(&json!({"a": [true, null, 1.5], "b": "it's"})),
            r#"{'a': [True, None, 1.5], 'b': "it's"}"#
        );
        let kwargs = json!({"n": 1, "s": "x"});
        assert_eq!(kwargs_repr(kwargs.as_object().expect("a map")), "{'n': 1, 's': 'x'}");
        assert_eq!(python_repr(&json!("a'b\"c")), r#"'a\'b"c'"#);
    }

    #[test]
    fn an_event_has_celerys_common_fields_and_its_type_as_routing_key() {
        let event = Event::new("task-succeeded", vec![("uuid", json!("id-1")), ("runtime", json!(0.25))]);
        assert_eq!(event.routing_key(), "task.succeeded");
        let body = event.to_json("lepus@vm-1", 9, 1.5);
        assert_eq!(body["type"], "task-succeeded");
        assert_eq!(body["hostname"], "lepus@vm-1");
        assert_eq!(body["uuid"], "id-1");
        assert_eq!(body["clock"], 9);
        assert_eq!(body["timestamp"], 1.5);
        assert_eq!(body["runtime"], 0.25);
        assert_eq!(body["pid"], std::process::id());
        assert_eq!(body.as_object().map(Map::len), Some(8));
        assert_eq!(properties("lepus@vm-1").delivery_mode(), &Some(1));
    }
}
