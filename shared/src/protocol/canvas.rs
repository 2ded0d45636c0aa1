//! Celery's canvas in the message body: [`Embed`], the third element of `[args, kwargs, embed]`,
//! says what to send once the job has run: `callbacks` (links) and the next `chain` step after a
//! success, `errbacks` (error links) after a failure. Each is a [`Signature`]: a task name,
//! partial arguments and options.
//!
//! Celery stores a chain's remaining steps with the next one last; each step carries its
//! `task_id` and its caller's `reply_to` in its options, so the caller can await the last one.

use super::args::Arguments;
use super::task::{RETRY_HEADER, TaskMessage, parse_time};
use crate::ids::JobId;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// A task to send later: Celery's signature (`add.s(4)`), as JSON in a message body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    /// The task name.
    pub task: String,
    /// Positional arguments; a result is put before them unless the signature is immutable.
    #[serde(default)]
    pub args: Vec<Value>,
    /// Keyword arguments.
    #[serde(default)]
    pub kwargs: Map<String, Value>,
    /// Options: `task_id`, `reply_to`, `queue`, `countdown`, `eta`, `expires`, `time_limit`,
    /// `link`, `link_error`, and Lepus's `x-lepus-retry` (a retry policy), …
    #[serde(default)]
    pub options: Map<String, Value>,
    /// `null` for a plain task; `group`, `chain` or `chord` for canvas primitives.
    #[serde(default)]
    pub subtask_type: Option<String>,
    /// Whether the parent's result is left out of the arguments (`add.si(…)`).
    #[serde(default)]
    pub immutable: bool,
    /// Anything else Celery put there, carried through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The embed of a task message: what follows the job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Embed {
    /// Sent with the result as first argument after a success (`link`).
    pub callbacks: Vec<Signature>,
    /// Sent with the failed job's id as first argument after a failure (`link_error`).
    pub errbacks: Vec<Signature>,
    /// The chain's remaining steps, the next one last.
    pub chain: Vec<Signature>,
    /// A chord's header and body, carried through (Lepus does not run chords).
    pub chord: Value,
}

impl Embed {
    /// The embed of a message body's third element (`null` or absent: nothing follows).
    pub fn from_value(value: &Value) -> Result<Self, String> {
        let Value::Object(map) = value else {
            return if value.is_null() { Ok(Self::default()) } else { Err("the embed must be an object".into()) };
        };
        let list = |key: &str| -> Result<Vec<Signature>, String> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(value) => serde_json::from_value(value.clone()).map_err(|e| format!("embed `{key}`: {e}")),
            }
        };
        Ok(Self {
            callbacks: list("callbacks")?,
            errbacks: list("errbacks")?,
            chain: list("chain")?,
            chord: map.get("chord").cloned().unwrap_or(Value::Null),
        })
    }

    /// The embed as a message body's third element.
    #[must_use]
    pub fn to_value(&self) -> Value {
        let list = |signatures: &[Signature]| if signatures.is_empty() { Value::Null } else { json!(signatures) };
        json!({
            "callbacks": list(&self.callbacks),
            "errbacks": list(&self.errbacks),
            "chain": list(&self.chain),
            "chord": self.chord,
        })
    }

    /// Whether nothing follows the job.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.callbacks.is_empty() && self.errbacks.is_empty() && self.chain.is_empty() && self.chord.is_null()
    }
}

/// Where a follow-up message goes when its signature names no queue.
#[derive(Debug, Clone, Copy)]
pub struct SignatureDefaults<'a> {
    /// The queue (the parent's, as a Celery worker routes to its own default queue).
    pub queue: &'a str,
    /// The caller's reply queue, for signatures that name none.
    pub reply_to: Option<&'a str>,
}

impl Signature {
    /// A signature for `task` with these partial arguments.
    #[must_use]
    pub fn new(task: impl Into<String>, arguments: Arguments) -> Self {
        Self {
            task: task.into(),
            args: arguments.args,
            kwargs: arguments.kwargs,
            options: Map::new(),
            subtask_type: None,
            immutable: false,
            extra: Map::new(),
        }
    }

    /// The message that sends this signature as a child of `parent`: `first` (the parent's result,
    /// or its id for an errback) before the partial arguments unless the signature is immutable,
    /// `parent_id` and `root_id` carried on, `chain` as the remaining steps. Returns the queue it
    /// goes to, too.
    pub fn message(
        &self,
        first: Option<Value>,
        parent: &TaskMessage,
        chain: Vec<Signature>,
        defaults: SignatureDefaults<'_>,
    ) -> Result<(String, TaskMessage), String> {
        if let Some(kind) = &self.subtask_type {
            return Err(format!("a {kind} signature ({}): Lepus sends plain task signatures only", self.task));
        }
        let option_str = |key: &str| self.options.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
        let mut args = Vec::with_capacity(self.args.len() + 1);
        if !self.immutable {
            args.extend(first);
        }
        args.extend(self.args.iter().cloned());
        let mut message = TaskMessage::new(self.task.clone(), Arguments { args, kwargs: self.kwargs.clone() });
        if let Some(id) = option_str("task_id") {
            message.id = JobId::from(id);
            message.correlation_id = Some(id.to_owned());
        }
        message.parent_id = Some(parent.id.to_string());
        message.root_id = Some(parent.root_id.clone().unwrap_or_else(|| parent.id.to_string()));
        message.reply_to = option_str("reply_to").or(defaults.reply_to).map(str::to_owned);
        message.eta = self.eta(Utc::now())?;
        message.expires = self.expires(Utc::now())?;
        let seconds = |key: &str| self.options.get(key).and_then(Value::as_f64);
        message.retry = self.options.get(RETRY_HEADER).and_then(|policy| serde_json::from_value(policy.clone()).ok());
        message.time_limit.hard = seconds("time_limit");
        message.time_limit.soft = seconds("soft_time_limit");
        let mut embed = Embed { chain, ..Embed::default() };
        embed.callbacks = self.linked("link")?;
        embed.errbacks = self.linked("link_error")?;
        message.embed = embed.to_value();
        Ok((self.queue().unwrap_or(defaults.queue).to_owned(), message))
    }

    /// The queue its options name (`queue`, as a name or as kombu's queue object, else a
    /// `routing_key` on the default exchange).
    fn queue(&self) -> Option<&str> {
        match self.options.get("queue") {
            Some(Value::String(name)) if !name.is_empty() => return Some(name),
            Some(Value::Object(queue)) => return queue.get("name").and_then(Value::as_str),
            _ => {}
        }
        let default_exchange = self.options.get("exchange").is_none_or(|e| e.as_str().is_some_and(str::is_empty));
        self.options.get("routing_key").and_then(Value::as_str).filter(|_| default_exchange)
    }

    fn eta(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, String> {
        if let Some(eta) = self.options.get("eta").filter(|v| !v.is_null()) {
            return eta.as_str().and_then(parse_time).map(Some).ok_or_else(|| format!("bad eta option {eta}"));
        }
        Ok(self.options.get("countdown").and_then(Value::as_f64).map(|s| now + seconds(s)))
    }

    fn expires(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, String> {
        match self.options.get("expires") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64().map(|s| now + seconds(s))),
            Some(Value::String(at)) => parse_time(at).map(Some).ok_or_else(|| format!("bad expires option {at:?}")),
            Some(other) => Err(format!("bad expires option {other}")),
        }
    }

    /// The signatures in option `key` (`link`, `link_error`): one or a list.
    fn linked(&self, key: &str) -> Result<Vec<Signature>, String> {
        match self.options.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(list)) => list.iter().map(|s| parse(s, key)).collect(),
            Some(one) => Ok(vec![parse(one, key)?]),
        }
    }
}

fn parse(value: &Value, key: &str) -> Result<Signature, String> {
    serde_json::from_value(value.clone()).map_err(|e| format!("option `{key}`: {e}"))
}

fn seconds(s: f64) -> TimeDelta {
    TimeDelta::milliseconds((s * 1000.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body Celery 5.5 sends for `chain(add.s(2, 2), add.s(4), add.s(8)).apply_async()`.
    const CELERY_CHAIN: &str = r#"{"callbacks": null, "errbacks": null, "chain": [
        {"task": "demo.add", "args": [8], "kwargs": {}, "options": {"task_id": "last", "reply_to": "caller"}, "subtask_type": null, "immutable": false},
        {"task": "demo.add", "args": [4], "kwargs": {}, "options": {"task_id": "second", "reply_to": "caller"}, "subtask_type": null, "immutable": false}],
        "chord": null}"#;

    fn parent() -> TaskMessage {
        let mut parent = TaskMessage::new("demo.add", Arguments::default());
        parent.id = JobId::from("first");
        parent.root_id = Some("first".into());
        parent
    }

    #[test]
    fn the_next_chain_step_gets_the_result_first_and_the_rest_of_the_chain() {
        let mut embed = Embed::from_value(&serde_json::from_str(CELERY_CHAIN).expect("json")).expect("an embed");
        let next = embed.chain.pop().expect("a next step");
        let defaults = SignatureDefaults { queue: "jobs", reply_to: None };
        let (queue, message) =
            next.message(Some(json!(4)), &parent(), embed.chain.clone(), defaults).expect("a message");
        assert_eq!(queue, "jobs");
        assert_eq!(message.arguments.args, [json!(4), json!(4)]);
        assert_eq!((message.id.as_str(), message.reply_to.as_deref()), ("second", Some("caller")));
        assert_eq!((message.parent_id.as_deref(), message.root_id.as_deref()), (Some("first"), Some("first")));
        let rest = Embed::from_value(&message.embed).expect("an embed");
        assert_eq!(rest.chain.len(), 1);
        assert_eq!(rest.chain[0].options["task_id"], "last");
    }

    #[test]
    fn immutable_signatures_options_and_links_are_honoured() {
        let errback: Signature = serde_json::from_value(json!({
            "task": "py.record", "args": ["boom"], "kwargs": {}, "immutable": true,
            "options": {"queue": "links", "countdown": 5, "link": {"task": "py.next", "args": []}},
        }))
        .expect("a signature");
        let defaults = SignatureDefaults { queue: "jobs", reply_to: Some("caller") };
        let (queue, message) =
            errback.message(Some(json!("first")), &parent(), Vec::new(), defaults).expect("a message");
        assert_eq!(queue, "links");
        assert_eq!(message.arguments.args, [json!("boom")], "immutable: the id is not added");
        assert_eq!(message.reply_to.as_deref(), Some("caller"));
        let due = message.eta.expect("a countdown") - Utc::now();
        assert!((4..=5).contains(&due.num_seconds()), "{due}");
        assert_eq!(Embed::from_value(&message.embed).expect("an embed").callbacks[0].task, "py.next");
    }

    #[test]
    fn malformed_embeds_and_canvas_primitives_are_refused_with_a_reason() {
        assert!(Embed::from_value(&json!("nope")).is_err());
        assert!(Embed::from_value(&json!({"callbacks": [{"args": []}]})).expect_err("no task").contains("callbacks"));
        assert!(Embed::from_value(&Value::Null).expect("nothing follows").is_empty());
        let group: Signature =
            serde_json::from_value(json!({"task": "celery.group", "subtask_type": "group"})).expect("a signature");
        let refused = group.message(None, &parent(), Vec::new(), SignatureDefaults { queue: "q", reply_to: None });
        assert!(refused.expect_err("unsupported").contains("group"));
    }

    #[test]
    fn an_embed_survives_its_wire_form() {
        let embed = Embed::from_value(&serde_json::from_str(CELERY_CHAIN).expect("json")).expect("an embed");
        assert_eq!(Embed::from_value(&embed.to_value()).expect("again"), embed);
    }
}
