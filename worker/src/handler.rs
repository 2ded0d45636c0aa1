//! [`Handler`]: what runs a job. Any async function of the job and up to three more arguments
//! that implement [`FromContext`] (the [`crate::JobContext`], [`crate::State`], …), returning the
//! job's output or any error:
//!
//! ```text
//! async fn add(job: Add) -> Result<i64, JobError>
//! async fn resize(job: Resize, ctx: JobContext) -> anyhow::Result<String>
//! async fn report(job: Report, State(db): State<Db>, ctx: JobContext) -> Result<Summary, MyError>
//! ```

use crate::context::JobContext;
use crate::extract::FromContext;
use crate::job_error::JobError;
use lepus::Job;
use std::any::TypeId;
use std::future::Future;
use std::pin::Pin;

/// The future of one handler call.
pub(crate) type HandlerFuture<O> = Pin<Box<dyn Future<Output = Result<O, JobError>> + Send>>;

/// An async function that runs jobs of type `J`; `Args` are the arguments it takes besides the
/// job. Implemented for every such function: there is nothing to implement.
pub trait Handler<J: Job, Args>: Send + Sync + 'static {
    /// Runs the job with arguments taken from `context`.
    #[doc(hidden)]
    fn call(&self, job: J, context: &JobContext) -> HandlerFuture<J::Output>;

    /// The state the arguments need registered on the worker.
    #[doc(hidden)]
    fn required_states() -> Vec<(TypeId, &'static str)>;
}

macro_rules! handler {
    ($($arg:ident $value:ident),*) => {
        impl<J, F, Fut, E, $($arg,)*> Handler<J, ($($arg,)*)> for F
        where
            J: Job,
            F: Fn(J, $($arg,)*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = Result<J::Output, E>> + Send + 'static,
            E: Into<anyhow::Error>,
            $($arg: FromContext,)*
        {
            #[allow(unused_variables)]
            fn call(&self, job: J, context: &JobContext) -> HandlerFuture<J::Output> {
                $(
                    let $value = match $arg::from_context(context) {
                        Ok(value) => value,
                        Err(e) => return Box::pin(std::future::ready(Err(e))),
                    };
                )*
                let running = self(job, $($value,)*);
                Box::pin(async move { running.await.map_err(|e| JobError::from_handler(e.into())) })
            }

            #[allow(unused_mut)]
            fn required_states() -> Vec<(TypeId, &'static str)> {
                let mut states = Vec::new();
                $(states.extend($arg::required_state());)*
                states
            }
        }
    };
}

handler!();
handler!(A1 a1);
handler!(A1 a1, A2 a2);
handler!(A1 a1, A2 a2, A3 a3);
