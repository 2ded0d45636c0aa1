//! `lepus enqueue`, `call`, `batch` and `progress`: jobs and batches sent by name with JSON
//! arguments, as a Python service would send them.

use crate::args::{JobArgs, SendArgs};
use crate::output::{out, print_json};
use lepus::protocol::Arguments;
use lepus::{Batch, BatchId, Client, Request, RetryPolicy};
use serde_json::{Map, Value, json};
use std::time::Duration;

impl SendArgs {
    /// The request for `job`, with `item` (a batch item) merged in.
    pub(crate) fn request(&self, job: &str, item: Option<Value>) -> Result<Request, String> {
        let mut args: Vec<Value> =
            serde_json::from_str(&self.args).map_err(|e| format!("--args must be a JSON array: {e}"))?;
        let mut kwargs: Map<String, Value> =
            serde_json::from_str(&self.kwargs).map_err(|e| format!("--kwargs must be a JSON object: {e}"))?;
        match item {
            Some(Value::Object(fields)) => kwargs.extend(fields),
            Some(other) => args.push(other),
            None => {}
        }
        let mut request = Request::task(job, Arguments { args, kwargs }).queue(self.queue.as_str());
        if let Some(expires) = self.expires {
            request = request.expires_in(expires);
        }
        if let Some(attempts) = self.max_attempts {
            request = request.retry(RetryPolicy::attempts(attempts));
        }
        Ok(request)
    }
}

impl JobArgs {
    fn request(&self) -> Result<Request, String> {
        let mut request = self.send.request(&self.job, None)?;
        if let Some(delay) = self.delay {
            request = request.delay(delay);
        }
        if let Some(at) = self.at {
            request = request.at(at);
        }
        Ok(request)
    }
}

pub(crate) async fn enqueue(client: &Client, job: &JobArgs, json: bool) -> Result<(), String> {
    let id = client.enqueue(job.request()?).await.map_err(|e| e.to_string())?;
    if json {
        print_json(&json!({ "id": id.as_str() }))
    } else {
        out!("{id}")
    }
    Ok(())
}

/// Sends the job, waits up to `wait` for its result and prints it; a failed job is an error.
pub(crate) async fn call(client: &Client, job: &JobArgs, wait: Duration, json: bool) -> Result<(), String> {
    let pending = client.submit(job.request()?).await.map_err(|e| e.to_string())?;
    let id = pending.id().clone();
    let result = pending.result_message(wait).await.map_err(|e| e.to_string())?;
    if json {
        print_json(&serde_json::to_value(&result).unwrap_or_default());
    } else if let Some(exception) = result.exception() {
        return Err(format!("job {id} ended {:?}: {}: {}", result.status, exception.exc_type, exception.message()));
    } else {
        out!("{}", result.result);
    }
    Ok(())
}

pub(crate) async fn batch(
    client: &Client,
    job: &str,
    items: &str,
    send: &SendArgs,
    callback: Option<String>,
    callback_kwargs: &str,
    json: bool,
) -> Result<(), String> {
    let items: Vec<Value> = serde_json::from_str(items).map_err(|e| format!("--items must be a JSON array: {e}"))?;
    let mut batch = Batch::new();
    for item in items {
        batch = batch.job(send.request(job, Some(item))?);
    }
    if let Some(callback) = callback {
        let kwargs: Map<String, Value> = serde_json::from_str(callback_kwargs)
            .map_err(|e| format!("--callback-kwargs must be a JSON object: {e}"))?;
        batch =
            batch.callback(Request::task(callback, Arguments { args: Vec::new(), kwargs }).queue(send.queue.as_str()));
    }
    let id = client.enqueue_batch(batch).await.map_err(|e| e.to_string())?;
    if json {
        print_json(&json!({ "id": id.as_str() }))
    } else {
        out!("{id}")
    }
    Ok(())
}

pub(crate) async fn progress(client: &Client, batch: &str, since: Option<Duration>, json: bool) -> Result<(), String> {
    let id = BatchId::from(batch);
    let read = match since {
        Some(ago) => {
            let ago = chrono::TimeDelta::from_std(ago).map_err(|e| format!("--since {ago:?}: {e}"))?;
            client.batch_progress_since(&id, chrono::Utc::now() - ago).await
        }
        None => client.batch_progress(&id).await,
    };
    let p = read.map_err(|e| e.to_string())?;
    if json {
        print_json(&json!({
            "total": p.total, "done": p.done, "failed": p.failed, "pending": p.pending,
            "complete": p.complete, "failed_jobs": p.failed_jobs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    out!("total={} done={} failed={} pending={} complete={}", p.total, p.done, p.failed, p.pending, p.complete);
    for failed in &p.failed_jobs {
        out!("failed\t{failed}");
    }
    Ok(())
}
