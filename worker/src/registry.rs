//! The handlers a worker runs, by job name, behind one type-erased interface: arguments in as
//! Celery `args`/`kwargs`, output out as JSON.

use crate::context::JobContext;
use crate::handler::Handler;
use crate::job_error::JobError;
use lepus::protocol::Arguments;
use lepus::{Job, RetryPolicy};
use serde_json::Value;
use std::any::TypeId;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Why a handler call produced no output.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The arguments do not decode into the job's input type.
    BadInput(String),
    /// The handler failed.
    Failed(JobError),
}

pub(crate) type CallFuture = Pin<Box<dyn Future<Output = Result<Value, CallError>> + Send>>;

/// A handler with its input and output types erased to JSON.
pub(crate) trait Erased: Send + Sync {
    /// Runs the handler on `arguments` (an event handler's: the event's body, alone in `args`).
    fn call(&self, arguments: Arguments, context: &JobContext) -> CallFuture;
}

struct Typed<J, H, Args> {
    handler: H,
    job: PhantomData<fn(J, Args)>,
}

impl<J: Job, Args: 'static, H: Handler<J, Args>> Erased for Typed<J, H, Args> {
    fn call(&self, arguments: Arguments, context: &JobContext) -> CallFuture {
        let input = match arguments.into_input::<J>() {
            Ok(input) => input,
            Err(e) => return Box::pin(std::future::ready(Err(CallError::BadInput(e.to_string())))),
        };
        let running = self.handler.call(input, context);
        Box::pin(async move {
            let output = running.await.map_err(CallError::Failed)?;
            serde_json::to_value(output)
                .map_err(|e| CallError::Failed(JobError::new(format!("cannot encode the job's output: {e}"))))
        })
    }
}

/// A registered job: its handler, the job type's run options, and the state its handler needs.
pub(crate) struct Registered {
    pub(crate) name: Arc<str>,
    pub(crate) handler: Arc<dyn Erased>,
    pub(crate) retry: RetryPolicy,
    pub(crate) time_limit: Option<Duration>,
    /// The job type's rate limit (`Job::rate_limit`), unless a message says otherwise.
    pub(crate) rate_limit: Option<lepus::Rate>,
    pub(crate) required_states: Vec<(TypeId, &'static str)>,
}

/// Job name → handler.
#[derive(Default)]
pub(crate) struct Registry {
    handlers: HashMap<&'static str, Registered>,
    duplicates: Vec<&'static str>,
}

impl Registry {
    pub(crate) fn insert<J: Job, Args: 'static, H: Handler<J, Args>>(&mut self, handler: H) {
        let registered = Registered {
            name: J::NAME.into(),
            handler: Arc::new(Typed { handler, job: PhantomData::<fn(J, Args)> }),
            retry: J::retry_policy(),
            time_limit: J::time_limit(),
            rate_limit: J::rate_limit(),
            required_states: H::required_states(),
        };
        if self.handlers.insert(J::NAME, registered).is_some() {
            self.duplicates.push(J::NAME);
        }
    }

    /// Adds a handler already erased (an event handler of a subscription).
    pub(crate) fn add(&mut self, name: &'static str, registered: Registered) {
        if self.handlers.insert(name, registered).is_some() {
            self.duplicates.push(name);
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Registered> {
        self.handlers.get(name)
    }

    /// Names registered more than once (a start-up error).
    pub(crate) fn duplicates(&self) -> &[&'static str] {
        &self.duplicates
    }

    /// The jobs registered with a rate limit, and their rates.
    pub(crate) fn rate_limits(&self) -> impl Iterator<Item = (&'static str, lepus::Rate)> + '_ {
        self.handlers.iter().filter_map(|(name, job)| Some((*name, job.rate_limit?)))
    }

    pub(crate) fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.handlers.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// Every job with the state types its handler needs.
    pub(crate) fn requirements(&self) -> impl Iterator<Item = (&'static str, TypeId, &'static str)> + '_ {
        self.handlers.iter().flat_map(|(name, job)| job.required_states.iter().map(move |(id, ty)| (*name, *id, *ty)))
    }
}
