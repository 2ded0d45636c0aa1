//! Task messages in Celery's message protocol v2 with the JSON serializer.
//!
//! Headers carry the metadata (`task`, `id`, `retries`, `eta`, …), the body is the JSON array
//! `[args, kwargs, embed]`, and the properties carry `correlation_id` (= id), `reply_to`,
//! `content_type = application/json` and `delivery_mode = 2`.

use super::amqp_value::{json_from_table, table_from_json, to_json};
use super::args::Arguments;
use super::canvas::Embed;
use super::headers::{CONTENT_TYPE, without};
use crate::ids::JobId;
use crate::retry::RetryPolicy;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde_json::{Map, Value, json};

/// A decoded (or to-be-encoded) Celery v2 task message.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    /// The job id (`id` header).
    pub id: JobId,
    /// The job name (`task` header).
    pub task: String,
    /// Positional and keyword arguments (body elements 0 and 1).
    pub arguments: Arguments,
    /// Celery's `callbacks`/`errbacks`/`chain`/`chord` (body element 2), as JSON; read it with
    /// [`TaskMessage::canvas`].
    pub embed: Value,
    /// Run no earlier than this (`eta` header).
    pub eta: Option<DateTime<Utc>>,
    /// Do not run after this (`expires` header).
    pub expires: Option<DateTime<Utc>>,
    /// How many times the job was retried before this attempt (`retries` header).
    pub retries: u32,
    /// Batch (Celery group) id (`group` header).
    pub group: Option<String>,
    /// Position in the batch (`group_index` header).
    pub group_index: Option<u64>,
    /// First job of the workflow (`root_id` header); defaults to the id.
    pub root_id: Option<String>,
    /// The job that sent this one (`parent_id` header).
    pub parent_id: Option<String>,
    /// Hard and soft time limits in seconds (`timelimit` header, `[hard, soft]`).
    pub time_limit: TimeLimit,
    /// The sender does not want a result (`ignore_result` header).
    pub ignore_result: bool,
    /// The sender's retry policy for this job, overriding the job type's (`x-lepus-retry`
    /// header, a Lepus extension that Celery ignores).
    pub retry: Option<RetryPolicy>,
    /// Queue to send the result to (`reply_to` property).
    pub reply_to: Option<String>,
    /// Correlation id of the result (`correlation_id` property); Celery sets it to the id.
    pub correlation_id: Option<String>,
    /// Headers this struct does not model, kept so that forwarding a message loses nothing.
    pub extra_headers: FieldTable,
}

/// Celery's `timelimit` header: `[hard, soft]`, seconds, each optional.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimeLimit {
    /// The job is cancelled after this many seconds.
    pub hard: Option<f64>,
    /// Celery raises `SoftTimeLimitExceeded` inside the task after this many seconds.
    pub soft: Option<f64>,
}

/// Why a message is not a valid Celery v2 JSON task message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The content type is not JSON (e.g. a pickled Celery message).
    #[error("unsupported content type {0:?}: Lepus speaks Celery protocol v2 with JSON only")]
    ContentType(String),
    /// A required header is missing (`task` and `id`; the v1 protocol has neither).
    #[error("missing header `{0}` (not a Celery protocol v2 message)")]
    MissingHeader(&'static str),
    /// A header has a value of the wrong type or format.
    #[error("header `{name}`: {reason}")]
    Header {
        /// The header's name.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The body is not `[args, kwargs, embed]` JSON.
    #[error("body: {0}")]
    Body(String),
}

impl TaskMessage {
    /// A message for `task` with the given arguments, a fresh id and default headers.
    #[must_use]
    pub fn new(task: impl Into<String>, arguments: Arguments) -> Self {
        let id = JobId::random();
        Self {
            correlation_id: Some(id.to_string()),
            root_id: Some(id.to_string()),
            id,
            task: task.into(),
            arguments,
            embed: json!({"callbacks": null, "errbacks": null, "chain": null, "chord": null}),
            eta: None,
            expires: None,
            retries: 0,
            group: None,
            group_index: None,
            parent_id: None,
            time_limit: TimeLimit::default(),
            ignore_result: false,
            retry: None,
            reply_to: None,
            extra_headers: FieldTable::default(),
        }
    }

    /// Encodes the message: JSON body and AMQP properties (persistent, JSON, with headers).
    pub fn encode(&self) -> Result<(Vec<u8>, BasicProperties), serde_json::Error> {
        let body = serde_json::to_vec(&(&self.arguments.args, &self.arguments.kwargs, &self.embed))?;
        let text = |v: &str| AMQPValue::LongString(LongString::from(v));
        let maybe_text = |v: Option<&str>| v.map_or(AMQPValue::Void, text);
        let maybe_time = |t: Option<DateTime<Utc>>| t.map_or(AMQPValue::Void, |t| text(&iso8601(t)));
        let seconds = |s: Option<f64>| s.map_or(AMQPValue::Void, AMQPValue::Double);
        let mut headers = self.extra_headers.clone();
        let root_id = self.root_id.as_deref().filter(|root| *root != self.id.as_str());
        for (name, value) in [
            ("task", text(&self.task)),
            ("id", text(self.id.as_str())),
            ("eta", maybe_time(self.eta)),
            ("expires", maybe_time(self.expires)),
            ("group", maybe_text(self.group.as_deref())),
            ("group_index", self.group_index.map_or(AMQPValue::Void, |i| AMQPValue::LongLongInt(i as i64))),
            ("retries", if self.retries == 0 { AMQPValue::Void } else { AMQPValue::LongLongInt(self.retries.into()) }),
            (
                "timelimit",
                match self.time_limit {
                    TimeLimit { hard: None, soft: None } => AMQPValue::Void,
                    TimeLimit { hard, soft } => AMQPValue::FieldArray(vec![seconds(hard), seconds(soft)].into()),
                },
            ),
            ("root_id", maybe_text(root_id)),
            ("parent_id", maybe_text(self.parent_id.as_deref())),
            ("ignore_result", if self.ignore_result { AMQPValue::Boolean(true) } else { AMQPValue::Void }),
        ] {
            // Celery reads every header but `task` and `id` with a default (`retries` 0, no root
            // but the job itself, `ignore_result` false, `argsrepr` from the args, no `lang`,
            // `shadow` or `origin`). A header left at its default costs nothing on the wire, and
            // the broker moves, and writes to its log, fewer bytes per job.
            if !matches!(value, AMQPValue::Void) {
                headers.insert(ShortString::from(name), value);
            }
        }
        if let Some(retry) = self.retry {
            headers.insert(RETRY_HEADER.into(), AMQPValue::FieldTable(retry_header(retry)));
        }
        let mut properties = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_content_encoding("utf-8".into())
            .with_delivery_mode(2)
            .with_priority(0)
            .with_headers(headers);
        if let Some(correlation_id) = short(self.correlation_id.as_deref()) {
            properties = properties.with_correlation_id(correlation_id);
        }
        if let Some(reply_to) = short(self.reply_to.as_deref()) {
            properties = properties.with_reply_to(reply_to);
        }
        Ok((body, properties))
    }

    /// Decodes a delivered message, checking everything Lepus relies on.
    pub fn decode(properties: &BasicProperties, body: &[u8]) -> Result<Self, DecodeError> {
        if let Some(content_type) = properties.content_type().as_ref().filter(|t| t.as_str() != CONTENT_TYPE) {
            return Err(DecodeError::ContentType(content_type.to_string()));
        }
        let empty = FieldTable::default();
        let table = properties.headers().as_ref().unwrap_or(&empty);
        let headers = Headers(table);
        let task = headers.string("task")?.ok_or(DecodeError::MissingHeader("task"))?;
        let id = headers.string("id")?.ok_or(DecodeError::MissingHeader("id"))?;
        let (args, kwargs, embed) = decode_body(body)?;
        Embed::from_value(&embed).map_err(DecodeError::Body)?;
        let root_id = headers.string("root_id")?.unwrap_or_else(|| id.clone());
        Ok(Self {
            id: JobId::from(id),
            task,
            arguments: Arguments { args, kwargs },
            embed,
            eta: headers.time("eta")?,
            expires: headers.time("expires")?,
            retries: headers.whole("retries")?.map_or(0, |r| u32::try_from(r).unwrap_or(u32::MAX)),
            group: headers.string("group")?,
            group_index: headers.whole("group_index")?,
            root_id: Some(root_id),
            parent_id: headers.string("parent_id")?,
            time_limit: headers.time_limit()?,
            ignore_result: matches!(headers.get("ignore_result"), Some(AMQPValue::Boolean(true))),
            retry: match headers.get(RETRY_HEADER) {
                Some(AMQPValue::FieldTable(table)) => Some(
                    retry_policy(table)
                        .ok_or(DecodeError::Header { name: RETRY_HEADER, reason: "not a retry policy".into() })?,
                ),
                _ => None,
            },
            reply_to: properties.reply_to().as_ref().map(ToString::to_string).filter(|r| !r.is_empty()),
            correlation_id: properties.correlation_id().as_ref().map(ToString::to_string),
            extra_headers: unmodelled(table),
        })
    }

    /// What follows the job (Celery's canvas: links, error links, the rest of a chain).
    #[must_use]
    pub fn canvas(&self) -> Embed {
        // Decoding checked the embed; a message built in code has a valid one.
        Embed::from_value(&self.embed).unwrap_or_default()
    }

    /// Where the result goes: `(reply queue, correlation id)`, unless the sender wants none.
    #[must_use]
    pub fn reply_destination(&self) -> Option<(&str, &str)> {
        if self.ignore_result {
            return None;
        }
        let correlation_id = self.correlation_id.as_deref().unwrap_or(self.id.as_str());
        self.reply_to.as_deref().map(|reply_to| (reply_to, correlation_id))
    }
}

/// The header carrying a per-request retry policy.
pub(crate) const RETRY_HEADER: &str = "x-lepus-retry";

/// A retry policy as the value of the `x-lepus-retry` header.
fn retry_header(policy: RetryPolicy) -> FieldTable {
    match serde_json::to_value(policy) {
        Ok(Value::Object(map)) => table_from_json(&map),
        _ => FieldTable::default(),
    }
}

/// The retry policy in an `x-lepus-retry` header value.
fn retry_policy(table: &FieldTable) -> Option<RetryPolicy> {
    serde_json::from_value(Value::Object(json_from_table(table))).ok()
}

/// The headers `TaskMessage` models; everything else is carried in `extra_headers`.
#[rustfmt::skip]
const MODELLED: &[&str] = &[
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries", "timelimit",
    "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result", RETRY_HEADER,
];

/// The properties of a delivered message for its next attempt: `retries` and `eta` replaced, the
/// broker's `x-delivery-count` dropped (the new message starts its own count), everything else
/// (body, id, reply_to, other headers) kept.
#[must_use]
pub fn rescheduled(original: &BasicProperties, retries: u32, eta: Option<DateTime<Utc>>) -> BasicProperties {
    let mut headers = without(original.headers().as_ref(), &["x-delivery-count"]);
    headers.insert("retries".into(), AMQPValue::LongLongInt(i64::from(retries)));
    let eta = eta.map_or(AMQPValue::Void, |eta| AMQPValue::LongString(iso8601(eta).into()));
    headers.insert("eta".into(), eta);
    original.clone().with_headers(headers)
}

fn unmodelled(headers: &FieldTable) -> FieldTable {
    without(Some(headers), MODELLED)
}

/// The body's three parts: args, kwargs, embed.
type Body = (Vec<Value>, Map<String, Value>, Value);

fn decode_body(body: &[u8]) -> Result<Body, DecodeError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| DecodeError::Body(format!("not JSON: {e}")))?;
    let Value::Array(parts) = value else {
        return Err(DecodeError::Body("expected the array [args, kwargs, embed]".into()));
    };
    if !(2..=3).contains(&parts.len()) {
        return Err(DecodeError::Body(format!("expected [args, kwargs, embed], got {} elements", parts.len())));
    }
    let mut parts = parts.into_iter();
    let args = match parts.next() {
        Some(Value::Array(args)) => args,
        _ => return Err(DecodeError::Body("args (element 0) must be an array".into())),
    };
    let kwargs = match parts.next() {
        Some(Value::Object(kwargs)) => kwargs,
        _ => return Err(DecodeError::Body("kwargs (element 1) must be an object".into())),
    };
    Ok((args, kwargs, parts.next().unwrap_or(Value::Null)))
}

/// Typed reads of Celery headers, straight from the AMQP table.
struct Headers<'a>(&'a FieldTable);

impl Headers<'_> {
    /// A header's value; `null` (void) counts as absent.
    fn get(&self, name: &str) -> Option<&AMQPValue> {
        self.0.inner().get(name).filter(|v| !matches!(v, AMQPValue::Void))
    }

    fn string(&self, name: &'static str) -> Result<Option<String>, DecodeError> {
        match self.get(name) {
            None => Ok(None),
            Some(AMQPValue::LongString(s)) => Ok(Some(String::from_utf8_lossy(s.as_bytes()).into_owned())),
            Some(AMQPValue::ShortString(s)) => Ok(Some(s.to_string())),
            Some(other) => {
                Err(DecodeError::Header { name, reason: format!("expected a string, got {}", to_json(other)) })
            }
        }
    }

    fn whole(&self, name: &'static str) -> Result<Option<u64>, DecodeError> {
        match self.get(name).map(to_json) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(other) => Err(DecodeError::Header { name, reason: format!("expected a whole number, got {other}") }),
        }
    }

    fn time(&self, name: &'static str) -> Result<Option<DateTime<Utc>>, DecodeError> {
        self.string(name)?
            .map(|s| {
                parse_time(&s)
                    .ok_or_else(|| DecodeError::Header { name, reason: format!("not an ISO 8601 time: {s:?}") })
            })
            .transpose()
    }

    fn time_limit(&self) -> Result<TimeLimit, DecodeError> {
        let bad = |reason: String| DecodeError::Header { name: "timelimit", reason };
        let seconds = |v: &Value| match v {
            Value::Null => Ok(None),
            Value::Number(n) => n
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Some)
                .ok_or_else(|| bad(format!("bad number {n}"))),
            other => Err(bad(format!("expected seconds, got {other}"))),
        };
        match self.get("timelimit").map(to_json) {
            None => Ok(TimeLimit::default()),
            Some(Value::Array(limits)) if limits.len() == 2 => {
                Ok(TimeLimit { hard: seconds(&limits[0])?, soft: seconds(&limits[1])? })
            }
            Some(other) => Err(bad(format!("expected [hard, soft], got {other}"))),
        }
    }
}

/// Parses Celery's ISO 8601 times; a time without an offset is taken as UTC.
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|t| t.and_utc()))
}

/// Formats a time the way Python's `datetime.isoformat()` does for an aware UTC time.
pub(crate) fn iso8601(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, false)
}

fn short(s: Option<&str>) -> Option<ShortString> {
    s.and_then(|s| ShortString::try_new(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::headers::{header_str, set_header};

    fn round_trip(message: &TaskMessage) -> TaskMessage {
        let (body, properties) = message.encode().expect("encodes");
        TaskMessage::decode(&properties, &body).expect("decodes")
    }

    #[test]
    fn a_message_survives_encode_and_decode() {
        let mut m = TaskMessage::new("demo.add", Arguments { args: vec![json!(2), json!(3)], kwargs: Map::new() });
        m.eta = parse_time("2026-11-27T10:00:00.5+00:00");
        m.retries = 2;
        m.group = Some("g1".into());
        m.time_limit = TimeLimit { hard: Some(30.0), soft: None };
        m.reply_to = Some("replies".into());
        m.retry = Some(RetryPolicy::attempts(3));
        set_header(&mut m.extra_headers, "x-custom", "kept");
        assert_eq!(round_trip(&m), m);
        m.root_id = Some("the-workflow".into());
        m.ignore_result = true;
        m.retries = 0;
        assert_eq!(round_trip(&m), m, "non-default root and ignore_result, default retries");
    }

    #[test]
    fn the_wire_form_is_celery_v2() {
        let m = TaskMessage::new(
            "demo.echo",
            Arguments { args: vec![], kwargs: json!({"k": 1}).as_object().cloned().unwrap_or_default() },
        );
        let (body, properties) = m.encode().expect("encodes");
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body[0], json!([]));
        assert_eq!(body[1], json!({"k": 1}));
        assert_eq!(body[2]["callbacks"], Value::Null);
        assert_eq!(properties.delivery_mode(), &Some(2));
        assert_eq!(properties.content_type().as_ref().map(ShortString::as_str), Some(CONTENT_TYPE));
        let headers = properties.headers().clone().unwrap_or_default();
        assert_eq!(header_str(&headers, "task").as_deref(), Some("demo.echo"));
        let mut names: Vec<&str> = headers.inner().keys().map(ShortString::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["id", "task"], "headers at Celery's defaults are left out");
        assert_eq!(properties.correlation_id().as_ref().map(ShortString::as_str), Some(m.id.as_str()));
    }

    #[test]
    fn invalid_messages_say_what_is_wrong() {
        let (body, properties) = TaskMessage::new("t", Arguments::default()).encode().expect("encodes");
        let garbage = TaskMessage::decode(&properties, b"\x00garbage").expect_err("not json");
        assert!(matches!(garbage, DecodeError::Body(_)), "{garbage}");
        let pickle =
            TaskMessage::decode(&properties.clone().with_content_type("application/x-python-serialize".into()), &body);
        assert!(matches!(pickle, Err(DecodeError::ContentType(_))));
        let no_headers = TaskMessage::decode(&BasicProperties::default(), &body);
        assert_eq!(no_headers, Err(DecodeError::MissingHeader("task")));
        let object = TaskMessage::decode(&properties, br#"{"args": []}"#).expect_err("v1 body");
        assert!(object.to_string().contains("[args, kwargs, embed]"), "{object}");
    }

    #[test]
    fn a_rescheduled_message_keeps_everything_but_retries_and_eta() {
        let mut m = TaskMessage::new("demo.add", Arguments { args: vec![json!(1), json!(2)], kwargs: Map::new() });
        m.reply_to = Some("r".into());
        let (body, properties) = m.encode().expect("encodes");
        let eta = parse_time("2026-11-27T10:00:05+00:00");
        let next = TaskMessage::decode(&rescheduled(&properties, 2, eta), &body).expect("decodes");
        assert_eq!(next, TaskMessage { retries: 2, eta, ..m });
    }

    #[test]
    fn a_retry_policy_survives_its_header() {
        let policy = RetryPolicy::attempts(4).backoff(
            std::time::Duration::from_millis(1500),
            3.0,
            std::time::Duration::from_secs(60),
        );
        assert_eq!(retry_policy(&retry_header(policy)), Some(policy));
    }

    #[test]
    fn celery_times_parse_with_or_without_offset() {
        let aware = parse_time("2026-03-08T07:00:00.123456+00:00").expect("aware");
        let naive = parse_time("2026-03-08T07:00:00.123456").expect("naive");
        assert_eq!(aware, naive);
        assert_eq!(iso8601(aware), "2026-03-08T07:00:00.123456+00:00");
    }
}
