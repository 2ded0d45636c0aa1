//! Result messages in the format Celery's `rpc://` backend reads.
//!
//! A result is a JSON object `{task_id, status, result, traceback, children, date_done}` sent to the
//! caller's `reply_to` queue through the default exchange with `correlation_id` = the job id. A
//! failure's `result` is Celery's serialized exception `{exc_type, exc_message, exc_module}`.

use super::headers::{CONTENT_TYPE, node_name};
use super::task::iso8601;
use crate::ids::JobId;
use chrono::Utc;
use lapin::BasicProperties;
use lapin::types::ShortString;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Celery task states. Only `SUCCESS`, `FAILURE` and `REVOKED` end a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Not known yet.
    Pending,
    /// Received by a worker.
    Received,
    /// Started by a worker.
    Started,
    /// Finished with a value.
    Success,
    /// Finished with an error.
    Failure,
    /// Failed and will be retried.
    Retry,
    /// Not run: revoked or expired.
    Revoked,
}

impl Status {
    /// Whether this state ends the job (Celery's `READY_STATES`).
    #[must_use]
    pub fn is_ready(self) -> bool {
        matches!(self, Status::Success | Status::Failure | Status::Revoked)
    }
}

/// One result message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultMessage {
    /// The job's id.
    pub task_id: String,
    /// The job's state.
    pub status: Status,
    /// The return value, or the serialized exception for `FAILURE`/`REVOKED`.
    pub result: Value,
    /// A textual trace of the failure, if any.
    #[serde(default)]
    pub traceback: Option<String>,
    /// Jobs this job started (always empty for Lepus jobs).
    #[serde(default)]
    pub children: Vec<Value>,
    /// When the job ended, ISO 8601.
    #[serde(default)]
    pub date_done: Option<String>,
    /// The worker that ran the job (`hostname:pid` for Lepus workers; Celery's extended results
    /// use the same key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

/// A failure as Celery serializes exceptions: `{exc_type, exc_message, exc_module}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExceptionInfo {
    /// The exception's class name, e.g. `ValueError` or `JobError`.
    pub exc_type: String,
    /// The exception's arguments; Lepus sends one string.
    pub exc_message: Value,
    /// The Python module of the class; `None` lets Celery synthesize the class.
    #[serde(default)]
    pub exc_module: Option<String>,
}

impl ExceptionInfo {
    /// An exception of a class Celery creates on the fly (`exc_module = None`).
    #[must_use]
    pub fn new(exc_type: &str, message: impl Into<String>) -> Self {
        Self { exc_type: exc_type.into(), exc_message: json!([message.into()]), exc_module: None }
    }

    /// An exception of a class from a named Python module, e.g. `("builtins", "TypeError")`.
    #[must_use]
    pub fn python(module: &str, exc_type: &str, message: impl Into<String>) -> Self {
        Self { exc_module: Some(module.into()), ..Self::new(exc_type, message) }
    }

    /// The message as text: the exception's arguments joined, as `str(exc)` shows them.
    #[must_use]
    pub fn message(&self) -> String {
        match &self.exc_message {
            Value::String(s) => s.clone(),
            Value::Array(parts) if parts.len() == 1 => text(&parts[0]),
            Value::Array(parts) => parts.iter().map(text).collect::<Vec<_>>().join(", "),
            other => text(other),
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl ResultMessage {
    /// A `SUCCESS` result carrying `value`.
    #[must_use]
    pub fn success(id: &JobId, value: Value) -> Self {
        Self::ended(id, Status::Success, value, None)
    }

    /// A `FAILURE` result carrying the exception.
    #[must_use]
    pub fn failure(id: &JobId, exception: &ExceptionInfo, traceback: Option<String>) -> Self {
        Self::ended(id, Status::Failure, json!(exception), traceback)
    }

    /// A `REVOKED` result (the job was not run), carrying the reason as an exception.
    #[must_use]
    pub fn revoked(id: &JobId, exception: &ExceptionInfo) -> Self {
        Self::ended(id, Status::Revoked, json!(exception), None)
    }

    fn ended(id: &JobId, status: Status, result: Value, traceback: Option<String>) -> Self {
        Self {
            task_id: id.to_string(),
            status,
            result,
            traceback,
            children: Vec::new(),
            date_done: Some(iso8601(Utc::now())),
            worker: Some(node_name().to_owned()),
        }
    }

    /// The exception of a `FAILURE` or `REVOKED` result.
    #[must_use]
    pub fn exception(&self) -> Option<ExceptionInfo> {
        match self.status {
            Status::Failure | Status::Revoked => serde_json::from_value(self.result.clone()).ok(),
            _ => None,
        }
    }

    /// Encodes the result for the reply queue: JSON body, `correlation_id`, persistent.
    pub fn encode(&self, correlation_id: &str) -> Result<(Vec<u8>, BasicProperties), serde_json::Error> {
        let body = serde_json::to_vec(self)?;
        let mut properties = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_content_encoding("utf-8".into())
            .with_delivery_mode(2);
        if let Ok(correlation_id) = ShortString::try_new(correlation_id) {
            properties = properties.with_correlation_id(correlation_id);
        }
        Ok((body, properties))
    }

    /// Decodes a result message body.
    pub fn decode(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_have_the_rpc_backend_fields() {
        let id = JobId::from("abc");
        let (body, properties) = ResultMessage::success(&id, json!(5)).encode("abc").expect("encodes");
        let v: Value = serde_json::from_slice(&body).expect("json");
        for key in ["task_id", "status", "result", "traceback", "children", "date_done"] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(v["status"], "SUCCESS");
        assert_eq!(v["result"], 5);
        assert_eq!(properties.correlation_id().as_ref().map(ShortString::as_str), Some("abc"));
    }

    #[test]
    fn failures_carry_a_celery_exception() {
        let failure = ResultMessage::failure(&JobId::from("x"), &ExceptionInfo::new("JobError", "boom"), None);
        let back = ResultMessage::decode(&serde_json::to_vec(&failure).expect("json")).expect("decodes");
        assert_eq!(back.status, Status::Failure);
        let exception = back.exception().expect("an exception");
        assert_eq!(exception.exc_type, "JobError");
        assert_eq!(exception.message(), "boom");
        assert!(Status::Failure.is_ready() && !Status::Retry.is_ready());
    }

    #[test]
    fn results_from_celery_decode() {
        let celery = br#"{"status": "FAILURE", "result": {"exc_type": "ValueError", "exc_message": ["bad", 2], "exc_module": "builtins"}, "traceback": "Traceback ...", "children": [], "date_done": "2026-11-27T05:00:00.000000+00:00", "task_id": "t1"}"#;
        let r = ResultMessage::decode(celery).expect("decodes");
        assert_eq!(r.exception().map(|e| e.message()), Some("bad, 2".to_owned()));
    }
}
