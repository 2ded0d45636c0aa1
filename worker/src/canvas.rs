//! What follows a job by Celery's canvas in its message (`lepus::protocol::Embed`), as a Celery
//! worker does it:
//!
//! - after a success, each `link` callback and the next step of a chain, with the job's result
//!   as their first argument (the rest of the chain travels with the next step);
//! - after a failure, each `link_error` errback, with the failed job's id as its first argument;
//!   the chain stops, and each of its remaining steps gets the failure as its result, so that a
//!   caller awaiting the chain's last step is answered rather than left waiting.
//!
//! Follow-ups carry the job's id as `parent_id` and its root on as `root_id`, and the caller's
//! `reply_to` unless their signature names another; one that names no queue goes to the job's
//! own. Unlike a Celery worker, a Lepus worker sends every errback as a message (it runs no
//! Python `(request, exc, traceback)` errback in process), sends several links one by one rather
//! than as a group, and does not run chords.

use crate::outcome::{FollowUps, Reply};
use lepus::protocol::{Parent, ResultMessage, Signature, TaskMessage};
use serde_json::Value;

/// What follows `message`'s success with `output`; `queue` is where it came from.
pub(crate) fn after_success(message: &TaskMessage, queue: &str, output: &Value) -> FollowUps {
    let mut embed = message.canvas();
    let parent = Parent { message, queue };
    let mut then = FollowUps::default();
    for callback in &embed.callbacks {
        send(&mut then, parent, callback, Some(output.clone()), Vec::new());
    }
    if let Some(next) = embed.chain.pop() {
        send(&mut then, parent, &next, Some(output.clone()), embed.chain);
    }
    then
}

/// What follows `message`'s final failure (or revocation), answered with `result`.
pub(crate) fn after_failure(message: &TaskMessage, queue: &str, result: &ResultMessage) -> FollowUps {
    let embed = message.canvas();
    let mut then = FollowUps::default();
    if result.status == lepus::protocol::Status::Failure {
        let parent = Parent { message, queue };
        for errback in &embed.errbacks {
            send(&mut then, parent, errback, Some(Value::String(message.id.to_string())), Vec::new());
        }
    }
    for step in &embed.chain {
        let Some(id) = step.options.get("task_id").and_then(Value::as_str) else { continue };
        let to = step.options.get("reply_to").and_then(Value::as_str).or(message.reply_to.as_deref());
        if let Some(to) = to {
            let result = ResultMessage { task_id: id.to_owned(), ..result.clone() };
            then.replies.push(Reply { to: to.to_owned(), correlation_id: id.to_owned(), result });
        }
    }
    then
}

/// Adds the message that sends `signature` after `parent`; one that cannot be built is logged and
/// left out.
fn send(then: &mut FollowUps, parent: Parent<'_>, signature: &Signature, first: Option<Value>, chain: Vec<Signature>) {
    match parent.follow_up(signature, first, chain) {
        Ok(follow_up) => then.messages.push(follow_up),
        Err(e) => tracing::error!(task = signature.task, error = e, "a canvas follow-up was not sent"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lepus::protocol::{Arguments, Embed, ExceptionInfo};
    use serde_json::json;

    fn message_with(embed: Embed) -> TaskMessage {
        let mut message = TaskMessage::new("demo.add", Arguments::default());
        message.reply_to = Some("caller".into());
        message.embed = embed.to_value();
        message
    }

    fn step(id: &str, arg: i64) -> Signature {
        let mut step = Signature::new("demo.add", Arguments { args: vec![json!(arg)], ..Arguments::default() });
        step.options.insert("task_id".into(), json!(id));
        step
    }

    #[test]
    fn a_success_sends_the_links_and_the_next_step_with_the_result() {
        let link = Signature::new("py.record", Arguments::default());
        let message =
            message_with(Embed { callbacks: vec![link], chain: vec![step("c", 8), step("b", 4)], ..Embed::default() });
        let then = after_success(&message, "jobs", &json!(4));
        let sent: Vec<(&str, &str, Vec<Value>)> =
            then.messages.iter().map(|(q, m)| (q.as_str(), m.task.as_str(), m.arguments.args.clone())).collect();
        assert_eq!(sent, [("jobs", "py.record", vec![json!(4)]), ("jobs", "demo.add", vec![json!(4), json!(4)])]);
        let next = &then.messages[1].1;
        assert_eq!(
            (next.id.as_str(), next.parent_id.as_deref(), next.reply_to.as_deref()),
            ("b", Some(message.id.as_str()), Some("caller"))
        );
        assert_eq!(next.canvas().chain.len(), 1, "the rest of the chain travels on");
        assert!(then.replies.is_empty());
    }

    #[test]
    fn a_failure_sends_the_errbacks_with_the_id_and_answers_the_rest_of_the_chain() {
        let errback = Signature::new("py.on_error", Arguments::default());
        let message = message_with(Embed {
            errbacks: vec![errback],
            chain: vec![step("c", 8), step("b", 4)],
            ..Embed::default()
        });
        let failure = ResultMessage::failure(&message.id, &ExceptionInfo::new("JobError", "boom"), None);
        let then = after_failure(&message, "jobs", &failure);
        assert_eq!(then.messages.len(), 1);
        assert_eq!(then.messages[0].1.arguments.args, [json!(message.id.as_str())]);
        let answered: Vec<&str> = then.replies.iter().map(|r| r.correlation_id.as_str()).collect();
        assert_eq!(answered, ["c", "b"], "no step runs, each is answered with the failure");
        assert!(then.replies.iter().all(|r| r.to == "caller" && r.result.status == lepus::protocol::Status::Failure));
    }

    #[test]
    fn a_revoked_job_sends_no_errback_but_answers_its_chain() {
        let message = message_with(Embed {
            errbacks: vec![Signature::new("py.on_error", Arguments::default())],
            chain: vec![step("b", 4)],
            ..Embed::default()
        });
        let revoked = ResultMessage::revoked(&message.id, &ExceptionInfo::new("TaskRevokedError", "expired"));
        let then = after_failure(&message, "jobs", &revoked);
        assert!(then.messages.is_empty());
        assert_eq!(then.replies.len(), 1);
    }
}
