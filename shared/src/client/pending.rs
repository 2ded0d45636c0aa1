//! [`Pending`]: a submitted job whose result can be awaited, as its typed output
//! ([`Pending::output`], or `.await` with the client's result timeout) or as the raw result
//! message ([`Pending::result_message`]).

use crate::error::{Error, Result};
use crate::ids::JobId;
use crate::protocol::{ExceptionInfo, ResultMessage, Status};
use crate::replies::Waiters;
use serde::de::DeserializeOwned;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// A submitted job whose result can be awaited. Dropping it stops waiting.
///
/// ```no_run
/// # async fn demo(client: lepus::Client, request: lepus::Request<i64>) -> lepus::Result<()> {
/// let pending = client.submit(request).await?;
/// let sum: i64 = pending.await?; // the typed output, within the client's result timeout
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Pending<O> {
    id: JobId,
    correlation_id: String,
    receiver: oneshot::Receiver<ResultMessage>,
    waiters: Arc<Waiters>,
    /// How long `.await` waits.
    timeout: Duration,
    output: PhantomData<fn() -> O>,
}

impl<O> Pending<O> {
    pub(crate) fn new(
        id: JobId,
        correlation_id: String,
        receiver: oneshot::Receiver<ResultMessage>,
        waiters: Arc<Waiters>,
        timeout: Duration,
    ) -> Self {
        Self { id, correlation_id, receiver, waiters, timeout, output: PhantomData }
    }

    /// The job's id.
    #[must_use]
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// Waits up to `timeout` for the job's final result message, whatever its status: the raw
    /// message Celery's `rpc://` backend would read.
    pub async fn result_message(mut self, timeout: Duration) -> Result<ResultMessage> {
        match tokio::time::timeout(timeout, &mut self.receiver).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(Error::Closed(self.id.clone())),
            Err(_) => Err(Error::Timeout { what: "the job's result", after: timeout }),
        }
    }
}

impl<O: DeserializeOwned> Pending<O> {
    /// Waits up to `timeout` for the job's typed output. A job that failed is an
    /// [`Error::JobFailed`] carrying the exception (its Python type for a Celery task), one that
    /// was not run an [`Error::JobRevoked`].
    pub async fn output(self, timeout: Duration) -> Result<O> {
        let id = self.id.clone();
        let result = self.result_message(timeout).await?;
        let exception =
            || Box::new(result.exception().unwrap_or_else(|| ExceptionInfo::new("Unknown", result.result.to_string())));
        match result.status {
            Status::Success => serde_json::from_value(result.result.clone())
                .map_err(Error::serde("decode", format!("the result of job {id}"))),
            Status::Revoked => Err(Error::JobRevoked { id, exception: exception() }),
            _ => Err(Error::JobFailed {
                id,
                exception: exception(),
                traceback: result.traceback.as_deref().map(Box::from),
            }),
        }
    }
}

impl<O: DeserializeOwned + 'static> IntoFuture for Pending<O> {
    type Output = Result<O>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<O>> + Send>>;

    /// Waits for the typed output for the client's result timeout
    /// ([`crate::ClientOptions::result_timeout`]).
    fn into_future(self) -> Self::IntoFuture {
        let timeout = self.timeout;
        Box::pin(self.output(timeout))
    }
}

impl<O> Drop for Pending<O> {
    fn drop(&mut self) {
        self.waiters.forget(&self.correlation_id);
    }
}
