//! Handler arguments besides the job: anything that implements [`FromContext`]. Lepus gives the
//! [`JobContext`] itself, the [`EventContext`] of an event handler and [`State<T>`], a value
//! registered on the worker with [`crate::Worker::state`] (a database pool, an HTTP client); an
//! application can add its own.

use crate::context::JobContext;
use crate::event_context::EventContext;
use crate::job_error::JobError;
use std::any::{TypeId, type_name};
use std::ops::Deref;

/// An argument a handler takes besides its job, made from the run's context.
pub trait FromContext: Sized + Send + 'static {
    /// The argument for one run; an error fails the run (the worker checks at start-up that it
    /// has what [`FromContext::required_state`] names, so this does not happen for state).
    fn from_context(context: &JobContext) -> Result<Self, JobError>;

    /// The state this argument needs registered on the worker (its type id and name), checked
    /// when the worker starts. `None` by default.
    fn required_state() -> Option<(TypeId, &'static str)> {
        None
    }
}

impl FromContext for JobContext {
    fn from_context(context: &JobContext) -> Result<Self, JobError> {
        Ok(context.clone())
    }
}

impl FromContext for EventContext {
    /// The event of an event handler's run; a job's handler that asks for it fails, permanently.
    fn from_context(context: &JobContext) -> Result<Self, JobError> {
        context.event().cloned().ok_or_else(|| JobError::permanent("an EventContext is only given to event handlers"))
    }
}

/// State registered with [`crate::Worker::state`], cloned for each run: a pool or a client that
/// is cheap to clone, or an `Arc` around anything bigger.
///
/// ```no_run
/// use lepus_worker::{State, Worker, WorkerConfig};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Report { day: u32 }
/// # impl lepus::Job for Report { const NAME: &'static str = "reports.daily"; type Output = usize; }
/// #[derive(Clone)]
/// struct Db { url: String }
///
/// async fn report(job: Report, State(db): State<Db>) -> anyhow::Result<usize> {
///     Ok(db.url.len() + job.day as usize)
/// }
///
/// let worker = Worker::new(WorkerConfig::default()).state(Db { url: "postgres://…".into() }).register(report);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct State<T>(pub T);

impl<T> Deref for State<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Clone + Send + Sync + 'static> FromContext for State<T> {
    fn from_context(context: &JobContext) -> Result<Self, JobError> {
        context.state::<T>().cloned().map(State).ok_or_else(|| {
            JobError::permanent(format!("no state of type {} is registered on this worker", type_name::<T>()))
        })
    }

    fn required_state() -> Option<(TypeId, &'static str)> {
        Some((TypeId::of::<T>(), type_name::<T>()))
    }
}
