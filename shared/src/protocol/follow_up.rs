//! A follow-up's message: [`Signature::message`] builds what a worker sends after a job, by the
//! job's canvas ([`super::Embed`]), as a Celery worker builds it.

use super::args::Arguments;
use super::canvas::Embed;
use super::canvas::Signature;
use super::task::{RETRY_HEADER, TaskMessage, parse_time};
use crate::ids::JobId;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

/// Where a follow-up message goes when its signature names no queue.
#[derive(Debug, Clone, Copy)]
pub struct SignatureDefaults<'a> {
    /// The queue (the parent's, as a Celery worker routes to its own default queue).
    pub queue: &'a str,
    /// The caller's reply queue, for signatures that name none.
    pub reply_to: Option<&'a str>,
}

impl Signature {
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
    use crate::protocol::canvas::tests::CELERY_CHAIN;
    use serde_json::json;

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
    fn group_and_chord_signatures_are_refused_with_a_reason() {
        let group: Signature =
            serde_json::from_value(json!({"task": "celery.group", "subtask_type": "group"})).expect("a signature");
        let refused = group.message(None, &parent(), Vec::new(), SignatureDefaults { queue: "q", reply_to: None });
        assert!(refused.expect_err("unsupported").contains("group"));
    }
}
