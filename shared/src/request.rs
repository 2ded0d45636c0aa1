//! [`Request`]: what to run (a typed job or a task name with raw arguments) and where to send it.

use crate::error::{Error, Result};
use crate::job::{Job, JobId};
use crate::protocol::{Arguments, TaskMessage};
use crate::topology::{DEFAULT_QUEUE, validate_queue_name};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// A job to send, with its routing and options. `O` is the type its result decodes into.
///
/// A typed job converts into a request (`client.enqueue(Add { a: 1, b: 2 })`); build one to set
/// options: `Request::new(job).queue("emails")`. [`Request::task`] sends by name with raw
/// arguments, for jobs with no Rust type (a Python task, say).
pub struct Request<O = Value> {
    task: Cow<'static, str>,
    arguments: Result<Arguments, String>,
    queue: Cow<'static, str>,
    id: Option<JobId>,
    output: PhantomData<fn() -> O>,
}

impl<O> fmt::Debug for Request<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("task", &self.task)
            .field("queue", &self.queue)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<J: Job> From<J> for Request<J::Output> {
    fn from(job: J) -> Self {
        Self {
            task: Cow::Borrowed(J::NAME),
            arguments: Arguments::from_input(&job).map_err(|e| e.to_string()),
            queue: Cow::Borrowed(J::QUEUE),
            id: None,
            output: PhantomData,
        }
    }
}

impl Request<Value> {
    /// A request for the job named `task` with raw arguments, sent to the default queue; its
    /// result decodes as JSON.
    #[must_use]
    pub fn task(task: impl Into<String>, arguments: Arguments) -> Self {
        Self {
            task: Cow::Owned(task.into()),
            arguments: Ok(arguments),
            queue: Cow::Borrowed(DEFAULT_QUEUE),
            id: None,
            output: PhantomData,
        }
    }
}

impl<O> Request<O> {
    /// A request for a typed job.
    #[must_use]
    pub fn new<J: Job<Output = O>>(job: J) -> Self {
        job.into()
    }

    /// Sends the job to `queue` instead of the job's default queue.
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Cow::Owned(queue.into());
        self
    }

    /// Uses `id` as the job id instead of a random one.
    #[must_use]
    pub fn id(mut self, id: impl Into<JobId>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The queue name and the task message, checked.
    pub(crate) fn into_message(self) -> Result<(Cow<'static, str>, TaskMessage)> {
        validate_queue_name(&self.queue)?;
        let arguments = self.arguments.map_err(|reason| Error::Serde {
            action: "encode",
            what: format!("the input of job {}", self.task),
            reason,
        })?;
        let mut message = TaskMessage::new(self.task, arguments);
        if let Some(id) = self.id {
            message.correlation_id = Some(id.to_string());
            message.root_id = Some(id.to_string());
            message.id = id;
        }
        Ok((self.queue, message))
    }
}
