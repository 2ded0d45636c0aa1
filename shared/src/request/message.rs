//! A request as the task message it sends: checked, with its times resolved, and what follows it
//! (its links and the rest of its chain) as Celery signatures in the body.

use super::Request;
use crate::error::{Error, Result};
use crate::protocol::headers::set_header;
use crate::protocol::{Embed, TaskMessage};
use crate::rate::{RATE_KEY_HEADER, RATE_LIMIT_HEADER};
use crate::topology::{tier_name, validate_rate_key};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::borrow::Cow;

impl<O> Request<O> {
    /// The queue and the task message this request sends, checked, with `eta` and `expires`
    /// resolved against `now`. For code that publishes by other means (a transaction, say).
    /// A unique request is refused ([`Error::UniqueLock`]): only `Client::enqueue`, `submit` and
    /// `call` take its lock.
    pub fn into_message(self, now: DateTime<Utc>) -> Result<(Cow<'static, str>, TaskMessage)> {
        self.refuse_unique()?;
        let queue = tier_name(self.queue, self.priority)?;
        let arguments = self.arguments.map_err(Error::serde("encode", format!("the input of job {}", self.task)))?;
        let mut message = TaskMessage::new(self.task, arguments);
        message.eta = self.start.map(|start| start.resolve(now)).filter(|eta| *eta > now);
        message.expires = self.expires.map(|expires| expires.resolve(now));
        message.retry = self.retry;
        message.time_limit.hard = self.time_limit.map(|limit| limit.as_secs_f64());
        if let Some(concurrency) = &self.concurrency {
            concurrency.validate()?;
            concurrency.write(&mut message.extra_headers);
        }
        if let Some(rate) = self.rate {
            set_header(&mut message.extra_headers, RATE_LIMIT_HEADER, &rate.to_string());
        }
        if let Some(key) = &self.rate_key {
            validate_rate_key(key)?;
            set_header(&mut message.extra_headers, RATE_KEY_HEADER, key);
        }
        if let Some(id) = self.id {
            message.correlation_id = Some(id.to_string());
            message.root_id = Some(id.to_string());
            message.id = id;
        }
        let embed = embed(self.callbacks, self.errbacks, self.steps)?;
        // A new message's embed already says that nothing follows it.
        if !embed.is_empty() {
            message.embed = embed.to_value();
        }
        Ok((queue, message))
    }
}

/// The embed of a message whose job has these callbacks, errbacks and chained steps.
pub(super) fn embed(callbacks: Vec<Request>, errbacks: Vec<Request>, steps: Vec<Request>) -> Result<Embed> {
    let signatures = |requests: Vec<Request>| requests.into_iter().map(Request::signature).collect::<Result<Vec<_>>>();
    let mut chain = signatures(steps)?;
    chain.reverse(); // Celery keeps the next step last.
    Ok(Embed { callbacks: signatures(callbacks)?, errbacks: signatures(errbacks)?, chain, chord: Value::Null })
}
