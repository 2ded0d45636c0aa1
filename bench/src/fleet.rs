//! The Lepus worker processes of a `--delays`, `--scale` or `--memory` round: started together
//! on one queue, ready once each consumes it, stopped together. Their logs go to
//! `$TMPDIR/lepus-bench-<pid>/`.

use crate::admin::Admin;
use crate::options::Options;
use crate::role::WorkerSpec;
use crate::worker_process::WorkerProcess;
use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;

/// How long workers may take to attach their consumers.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts `count` stock Lepus workers on `queue`, `concurrency` jobs at once each, and waits until
/// all consume it.
pub(crate) async fn start(
    options: &Options,
    admin: &Admin,
    queue: &str,
    count: usize,
    concurrency: u16,
) -> anyhow::Result<Vec<WorkerProcess>> {
    let spec = WorkerSpec::lepus(&options.amqp_url, queue, concurrency);
    let mut workers = Vec::with_capacity(count);
    for index in 1..=count {
        let log = logs().join(format!("{queue}-worker-{index}.log"));
        workers.push(WorkerProcess::start(&spec, &log)?);
    }
    admin.await_consumers(queue, &mut workers, READY_TIMEOUT).await?;
    Ok(workers)
}

/// Stops every worker (SIGTERM, then a kill if one takes too long); fails if one did not stop
/// cleanly.
pub(crate) async fn stop(workers: Vec<WorkerProcess>) -> anyhow::Result<()> {
    let mut failed = None;
    for (index, worker) in workers.into_iter().enumerate() {
        if let Err(e) = worker.stop().await {
            failed.get_or_insert(e.context(format!("worker {}", index + 1)));
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Deletes the workers' logs, once a run went well.
pub(crate) fn remove_logs() -> anyhow::Result<()> {
    let logs = logs();
    match std::fs::remove_dir_all(&logs) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", logs.display()))
        }
        _ => Ok(()),
    }
}

fn logs() -> PathBuf {
    std::env::temp_dir().join(format!("lepus-bench-{}", std::process::id()))
}
