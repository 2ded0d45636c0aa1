//! Celery's remote-control messages, as kombu's `Mailbox` sends them: a [`ControlRequest`] is
//! broadcast on `celery.pidbox` (JSON body `{method, arguments, destination, pattern, matcher,
//! ticket, reply_to}`, headers `clock` and `expires`), and each node that takes it answers with
//! `{node name: reply}` on `reply.celery.pidbox` with the routing key `reply_to` names and the
//! request's `ticket` in its headers.

use super::amqp_value::{to_amqp, to_json};
use super::headers::CONTENT_TYPE;
use lapin::BasicProperties;
use lapin::types::FieldTable;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where a node sends its reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyTo {
    /// The reply exchange, `reply.celery.pidbox`.
    pub exchange: String,
    /// The asker's routing key (its mailbox id).
    pub routing_key: String,
}

/// A remote-control command, broadcast to every node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlRequest {
    /// The command: `ping`, `stats`, `revoke`…
    pub method: String,
    /// Its keyword arguments.
    #[serde(default)]
    pub arguments: Map<String, Value>,
    /// The node names it is for; `None`: every node.
    #[serde(default)]
    pub destination: Option<Vec<String>>,
    /// A pattern of node names it is for (with `matcher`, `glob` or `pcre`).
    #[serde(default)]
    pub pattern: Option<String>,
    /// How `pattern` matches.
    #[serde(default)]
    pub matcher: Option<String>,
    /// The asker's ticket, echoed in the replies' headers.
    #[serde(default)]
    pub ticket: Option<String>,
    /// Where to reply; `None`: no reply is wanted.
    #[serde(default)]
    pub reply_to: Option<ReplyTo>,
}

impl ControlRequest {
    /// Whether the node named `node` is meant: named in `destination`, matched by a `glob`
    /// pattern (`*` and `?`), or, with neither, every node. A `pcre` pattern is not matched
    /// (no node takes it).
    #[must_use]
    pub fn is_for(&self, node: &str) -> bool {
        match (&self.destination, &self.pattern, self.matcher.as_deref()) {
            (Some(destination), _, _) if !destination.is_empty() => destination.iter().any(|d| d == node),
            (_, Some(pattern), Some("glob") | None) => glob(pattern.as_bytes(), node.as_bytes()),
            (_, Some(_), Some(_)) => false,
            _ => true,
        }
    }

    /// The body and properties of the request, with the asker's Lamport `clock` and, if it
    /// waits for replies, the Unix time after which a reply is no use (`expires`).
    pub fn encode(&self, clock: u64, expires: Option<f64>) -> serde_json::Result<(Vec<u8>, BasicProperties)> {
        let mut headers = FieldTable::default();
        headers.insert("clock".into(), to_amqp(&Value::from(clock)));
        headers.insert("expires".into(), to_amqp(&Value::from(expires.unwrap_or(0.0))));
        Ok((serde_json::to_vec(self)?, transient_json(headers)))
    }

    /// Decodes a request's body.
    pub fn decode(body: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(body)
    }
}

/// The body and properties of `node`'s `reply` to the request with `ticket`.
pub fn encode_reply(
    node: &str,
    reply: &Value,
    ticket: Option<&str>,
    clock: u64,
) -> serde_json::Result<(Vec<u8>, BasicProperties)> {
    let mut body = Map::new();
    body.insert(node.to_owned(), reply.clone());
    let mut headers = FieldTable::default();
    if let Some(ticket) = ticket {
        headers.insert("ticket".into(), to_amqp(&Value::from(ticket)));
    }
    headers.insert("clock".into(), to_amqp(&Value::from(clock)));
    Ok((serde_json::to_vec(&body)?, transient_json(headers)))
}

/// A header of a control message or event as JSON (`clock`, `expires`, `ticket`).
#[must_use]
pub fn header(properties: &BasicProperties, name: &str) -> Option<Value> {
    properties.headers().as_ref()?.inner().get(name).map(to_json)
}

/// `{"ok": text}`, Celery's reply for a command that did what it was asked.
#[must_use]
pub fn ok(text: impl Into<String>) -> Value {
    serde_json::json!({ "ok": text.into() })
}

/// `{"error": text}`, Celery's reply for a command that could not be done.
#[must_use]
pub fn refused(text: impl Into<String>) -> Value {
    serde_json::json!({ "error": text.into() })
}

/// Transient JSON, as kombu sends control messages and events.
pub(crate) fn transient_json(headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(1)
        .with_headers(headers)
}

/// Shell-style matching of `name` by `pattern`: `*` any run, `?` one character.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.split_first(), name.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => glob(rest, name) || name.split_first().is_some_and(|(_, n)| glob(pattern, n)),
        (Some((b'?', rest)), Some((_, n))) => glob(rest, n),
        (Some((p, rest)), Some((c, n))) if p == c => glob(rest, n),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_as_kombu_sends_it_decodes_and_finds_its_nodes() {
        let body = br#"{"method": "revoke", "arguments": {"task_id": ["abc"]}, "destination": null, "pattern": null,
            "matcher": null, "ticket": "t-1", "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "oid"}}"#;
        let request = ControlRequest::decode(body).expect("decodes");
        assert_eq!(request.method, "revoke");
        assert_eq!(request.reply_to.as_ref().map(|r| r.routing_key.as_str()), Some("oid"));
        assert!(request.is_for("lepus@vm-1"));
        let to = |destination: &[&str]| ControlRequest {
            destination: Some(destination.iter().map(|d| (*d).to_owned()).collect()),
            ..request.clone()
        };
        assert!(to(&["lepus@vm-1"]).is_for("lepus@vm-1"));
        assert!(!to(&["celery@vm"]).is_for("lepus@vm-1"));
        let pattern =
            |p: &str, m: &str| ControlRequest { pattern: Some(p.into()), matcher: Some(m.into()), ..request.clone() };
        assert!(pattern("lepus@*", "glob").is_for("lepus@vm-1"));
        assert!(!pattern("celery@*", "glob").is_for("lepus@vm-1"));
        assert!(!pattern("lepus@.*", "pcre").is_for("lepus@vm-1"));
    }

    #[test]
    fn a_reply_names_its_node_and_carries_the_ticket() {
        let (body, properties) = encode_reply("lepus@vm-1", &ok("pong"), Some("t-1"), 7).expect("encodes");
        assert_eq!(
            serde_json::from_slice::<Value>(&body).expect("JSON"),
            serde_json::json!({"lepus@vm-1": {"ok": "pong"}})
        );
        assert_eq!(header(&properties, "ticket"), Some(Value::from("t-1")));
        assert_eq!(properties.delivery_mode(), &Some(1));
    }
}
