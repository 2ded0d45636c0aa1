//! Celery's canvas in the message body: [`Embed`], the third element of `[args, kwargs, embed]`,
//! says what to send once the job has run: `callbacks` (links) and the next `chain` step after a
//! success, `errbacks` (error links) after a failure. Each is a [`Signature`]: a task name,
//! partial arguments and options.
//!
//! Celery stores a chain's remaining steps with the next one last; each step carries its
//! `task_id` and its caller's `reply_to` in its options, so the caller can await the last one.

use super::args::Arguments;
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
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The body Celery 5.5 sends for `chain(add.s(2, 2), add.s(4), add.s(8)).apply_async()`.
    pub(crate) const CELERY_CHAIN: &str = r#"{"callbacks": null, "errbacks": null, "chain": [
        {"task": "demo.add", "args": [8], "kwargs": {}, "options": {"task_id": "last", "reply_to": "caller"}, "subtask_type": null, "immutable": false},
        {"task": "demo.add", "args": [4], "kwargs": {}, "options": {"task_id": "second", "reply_to": "caller"}, "subtask_type": null, "immutable": false}],
        "chord": null}"#;

    #[test]
    fn celerys_chain_parses_with_the_next_step_last() {
        let embed = Embed::from_value(&serde_json::from_str(CELERY_CHAIN).expect("json")).expect("an embed");
        assert_eq!(embed.chain.len(), 2);
        assert_eq!(
            (embed.chain[1].options["task_id"].as_str(), embed.chain[1].args.as_slice()),
            (Some("second"), &[json!(4)][..])
        );
        assert!(embed.callbacks.is_empty() && embed.errbacks.is_empty());
    }

    #[test]
    fn malformed_embeds_are_refused_with_a_reason() {
        assert!(Embed::from_value(&json!("nope")).is_err());
        assert!(Embed::from_value(&json!({"callbacks": [{"args": []}]})).expect_err("no task").contains("callbacks"));
        assert!(Embed::from_value(&Value::Null).expect("nothing follows").is_empty());
    }

    #[test]
    fn an_embed_survives_its_wire_form() {
        let embed = Embed::from_value(&serde_json::from_str(CELERY_CHAIN).expect("json")).expect("an embed");
        assert_eq!(Embed::from_value(&embed.to_value()).expect("again"), embed);
    }
}
