//! The demo jobs that `lepus-worker` registers; the README, the benchmark and the integration
//! tests rely on their names and behaviour.

use lepus::Job;
use lepus_worker::{JobContext, JobError, Worker};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

/// `demo.add`: `[a, b]` or `{"a": …, "b": …}` → `a + b`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Add {
    /// First term.
    pub a: i64,
    /// Second term.
    pub b: i64,
}

impl Job for Add {
    const NAME: &'static str = "demo.add";
    type Output = i64;
}

/// `demo.echo`: returns its keyword arguments unchanged.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Echo(pub Map<String, Value>);

impl Job for Echo {
    const NAME: &'static str = "demo.echo";
    type Output = Map<String, Value>;
}

/// `demo.sleep`: `{"seconds": f}` → sleeps that long, returns `f`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sleep {
    /// How long to sleep.
    pub seconds: f64,
}

impl Job for Sleep {
    const NAME: &'static str = "demo.sleep";
    type Output = f64;
}

/// `demo.fail`: `{"message": s}` → fails with the error message `s`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fail {
    /// The error message.
    pub message: String,
}

impl Job for Fail {
    const NAME: &'static str = "demo.fail";
    type Output = ();
}

/// `demo.noop`: returns `null` at once.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Noop {}

impl Job for Noop {
    const NAME: &'static str = "demo.noop";
    type Output = ();
}

/// Registers the five demo jobs.
#[must_use]
pub fn register(worker: Worker) -> Worker {
    worker.register(add).register(echo).register(sleep).register(fail).register(noop)
}

async fn add(job: Add, _: JobContext) -> Result<i64, JobError> {
    job.a.checked_add(job.b).ok_or_else(|| JobError::new(format!("{} + {} overflows a 64-bit integer", job.a, job.b)))
}

async fn echo(job: Echo, _: JobContext) -> Result<Map<String, Value>, JobError> {
    Ok(job.0)
}

async fn sleep(job: Sleep, _: JobContext) -> Result<f64, JobError> {
    let duration = Duration::try_from_secs_f64(job.seconds)
        .map_err(|_| JobError::new(format!("cannot sleep {} seconds", job.seconds)))?;
    tokio::time::sleep(duration).await;
    Ok(job.seconds)
}

async fn fail(job: Fail, _: JobContext) -> Result<(), JobError> {
    Err(JobError::new(job.message))
}

async fn noop(_: Noop, _: JobContext) -> Result<(), JobError> {
    Ok(())
}
