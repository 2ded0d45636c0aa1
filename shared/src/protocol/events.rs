//! Celery's monitoring events (what `celery events`, Flower and `-E` workers speak): one JSON
//! object per event on the `celeryev` topic exchange, its routing key the event's type with `.`
//! for `-` (`task.succeeded`), with the fields every event has (`hostname`, `utcoffset`, `pid`,
//! `clock`, `timestamp`, `type`) besides its own. Arguments, keyword arguments, results and
//! exceptions travel as Python reprs, as a Celery worker sends them.

use super::amqp_value::to_amqp;
use super::control::transient_json;
use lapin::BasicProperties;
use lapin::types::FieldTable;
use serde_json::{Map, Value};

/// An event's type and its own fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `worker-heartbeat`, `task-succeeded`, …
    pub kind: &'static str,
    /// The fields of this kind of event (`uuid`, `result`, `runtime`, …).
    pub fields: Map<String, Value>,
}

impl Event {
    /// An event of `kind` with `fields`.
    #[must_use]
    pub fn new(kind: &'static str, fields: Map<String, Value>) -> Self {
        Self { kind, fields }
    }

    /// This event as node `hostname` sends it, that happened at Unix time `timestamp`, Lamport
    /// clock `clock`: its own fields and the common ones.
    #[must_use]
    pub fn to_json(&self, hostname: &str, clock: u64, timestamp: f64) -> Value {
        let mut body = Map::with_capacity(self.fields.len() + 6);
        body.insert("hostname".into(), Value::from(hostname));
        body.insert("utcoffset".into(), Value::from(0));
        body.insert("pid".into(), Value::from(std::process::id()));
        body.insert("clock".into(), Value::from(clock));
        body.extend(self.fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        body.insert("timestamp".into(), Value::from(timestamp));
        body.insert("type".into(), Value::from(self.kind));
        Value::Object(body)
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
        Value::Object(map) => {
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
    }
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
        assert_eq!(python_repr(&json!("a'b\"c")), r#"'a\'b"c'"#);
    }

    #[test]
    fn an_event_has_celerys_common_fields_and_its_type_as_routing_key() {
        let mut fields = Map::new();
        fields.insert("uuid".into(), json!("id-1"));
        let event = Event::new("task-succeeded", fields);
        assert_eq!(event.routing_key(), "task.succeeded");
        let body = event.to_json("lepus@vm-1", 9, 1.5);
        assert_eq!(body["type"], "task-succeeded");
        assert_eq!(body["hostname"], "lepus@vm-1");
        assert_eq!(body["uuid"], "id-1");
        assert_eq!(body["clock"], 9);
        assert_eq!(properties("lepus@vm-1").delivery_mode(), &Some(1));
    }
}
