//! A stock Lepus worker process for the modes that price a Lepus feature against the same jobs
//! without it (`--batches`, `--priorities`, `--rate-limit`, `--concurrency-key`, `--unique`):
//! started on a queue and handed over once it consumes and has idled a moment.

use crate::admin::Admin;
use crate::options::Options;
use crate::role::{Side, WorkerSpec};
use crate::worker_process::WorkerProcess;
use std::path::Path;
use std::time::Duration;

/// How long a worker may take to attach its consumer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a ready worker idles before a timing starts.
const SETTLE: Duration = Duration::from_secs(1);

/// Starts a stock Lepus worker on `queue` (at `options`' concurrency, with `env` set) that
/// reports when it has acked `target` jobs; returns once it consumes `ready_on` (`queue`, or the
/// queue it attaches last) and has idled [`SETTLE`].
pub(crate) async fn start(
    options: &Options,
    admin: &Admin,
    queue: &str,
    ready_on: &str,
    target: u64,
    log: &Path,
    env: &[(&str, &str)],
) -> anyhow::Result<WorkerProcess> {
    let spec = WorkerSpec {
        side: Side::Lepus,
        amqp_url: options.amqp_url.clone(),
        queue: queue.to_owned(),
        concurrency: options.concurrency,
        targets: vec![target],
        celery_wire: false,
        metrics_addr: None,
        events: false,
        service: None,
    };
    let mut worker = WorkerProcess::start_with_env(&spec, log, env)?;
    admin.await_consumer(ready_on, &mut worker, READY_TIMEOUT).await?;
    tokio::time::sleep(SETTLE).await;
    Ok(worker)
}

/// How long a timing of `n` jobs may take before it fails: a minute, and 10 ms a job.
pub(crate) fn time_limit(n: u64) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(10).saturating_mul(u32::try_from(n).unwrap_or(u32::MAX))
}
