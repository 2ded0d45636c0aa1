//! A follow-up's message: [`Parent::follow_up`] builds what a worker sends after a job, by the
//! job's canvas ([`super::Embed`]), as a Celery worker builds it.

use super::args::Arguments;
use super::canvas::Embed;
use super::canvas::Signature;
use super::task::{RETRY_HEADER, TaskMessage, parse_time};
use crate::ids::JobId;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

/// A job that has run, as the parent of the follow-ups its canvas names.
#[derive(Debug, Clone, Copy)]
pub struct Parent<'a> {
    /// Its message.
    pub message: &'a TaskMessage,
    /// Where a follow-up goes when its signature names no queue: the parent's queue, as a Celery
    /// worker routes to its own default queue.
    pub queue: &'a str,
}

impl Parent<'_> {
    /// The message that sends `signature` as a child of this job: `first` (the parent's result,
    /// or its id for an errback) before the partial arguments unless the signature is immutable,
    /// `parent_id` and `root_id` carried on, the signature's `reply_to` or else the parent's,
    /// `chain` as the remaining steps. Returns the queue it goes to, too.
    pub fn follow_up(
        &self,
        signature: &Signature,
        first: Option<Value>,
        chain: Vec<Signature>,
    ) -> Result<(String, TaskMessage), String> {
        if let Some(kind) = &signature.subtask_type {
            return Err(format!("a {kind} signature ({}): Lepus sends plain task signatures only", signature.task));
        }
        let option_str = |key: &str| signature.options.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
        let mut args = Vec::with_capacity(signature.args.len() + 1);
        if !signature.immutable {
            args.extend(first);
        }
        args.extend(signature.args.iter().cloned());
        let mut message =
            TaskMessage::new(signature.task.clone(), Arguments { args, kwargs: signature.kwargs.clone() });
        if let Some(id) = option_str("task_id") {
            message.id = JobId::from(id);
            message.correlation_id = Some(id.to_owned());
        }
        let parent = self.message;
        message.parent_id = Some(parent.id.to_string());
        message.root_id = Some(parent.root_id.clone().unwrap_or_else(|| parent.id.to_string()));
        message.reply_to = option_str("reply_to").or(parent.reply_to.as_deref()).map(str::to_owned);
        message.eta = eta(signature, Utc::now())?;
        message.expires = expires(signature, Utc::now())?;
        let seconds = |key: &str| signature.options.get(key).and_then(Value::as_f64);
        message.retry =
            signature.options.get(RETRY_HEADER).and_then(|policy| serde_json::from_value(policy.clone()).ok());
        message.time_limit.hard = seconds("time_limit");
        message.time_limit.soft = seconds("soft_time_limit");
        let mut embed = Embed { chain, ..Embed::default() };
        embed.callbacks = linked(signature, "link")?;
        embed.errbacks = linked(signature, "link_error")?;
        message.embed = embed.to_value();
        Ok((queue(signature).unwrap_or(self.queue).to_owned(), message))
    }
}

/// The queue a signature's options name (`queue`, as a name or as kombu's queue object, else a
/// `routing_key` on the default exchange).
fn queue(signature: &Signature) -> Option<&str> {
    let options = &signature.options;
    match options.get("queue") {
        Some(Value::String(name)) if !name.is_empty() => return Some(name),
        Some(Value::Object(queue)) => return queue.get("name").and_then(Value::as_str),
        _ => {}
    }
    let default_exchange = options.get("exchange").is_none_or(|e| e.as_str().is_some_and(str::is_empty));
    options.get("routing_key").and_then(Value::as_str).filter(|_| default_exchange)
}

fn eta(signature: &Signature, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, String> {
    if let Some(eta) = signature.options.get("eta").filter(|v| !v.is_null()) {
        return eta.as_str().and_then(parse_time).map(Some).ok_or_else(|| format!("bad eta option {eta}"));
    }
    Ok(signature.options.get("countdown").and_then(Value::as_f64).map(|s| now + seconds(s)))
}

fn expires(signature: &Signature, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, String> {
    match signature.options.get("expires") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64().map(|s| now + seconds(s))),
        Some(Value::String(at)) => parse_time(at).map(Some).ok_or_else(|| format!("bad expires option {at:?}")),
        Some(other) => Err(format!("bad expires option {other}")),
    }
}

/// The signatures in option `key` (`link`, `link_error`): one or a list.
fn linked(signature: &Signature, key: &str) -> Result<Vec<Signature>, String> {
    match signature.options.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(list)) => list.iter().map(|s| parse(s, key)).collect(),
        Some(one) => Ok(vec![parse(one, key)?]),
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
        let parent = parent();
        let (queue, message) = Parent { message: &parent, queue: "jobs" }
            .follow_up(&next, Some(json!(4)), embed.chain.clone())
            .expect("a message");
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
        let mut parent = parent();
        parent.reply_to = Some("caller".into());
        let (queue, message) = Parent { message: &parent, queue: "jobs" }
            .follow_up(&errback, Some(json!("first")), Vec::new())
            .expect("a message");
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
        let parent = parent();
        let refused = Parent { message: &parent, queue: "q" }.follow_up(&group, None, Vec::new());
        assert!(refused.expect_err("unsupported").contains("group"));
    }
}
