//! A worker process as the orchestrator sees it: started from this binary in a worker role, its
//! standard output read by a thread that timestamps each `settled` line on arrival, its standard
//! error kept in a log file, stopped with SIGTERM (and killed if it lingers or is dropped).

use crate::proc_status::{self, Memory};
use crate::role::WorkerSpec;
use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long a worker may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running worker process.
#[derive(Debug)]
pub(crate) struct WorkerProcess {
    child: Child,
    log: PathBuf,
    /// Every report, with the instant it arrived.
    reports: mpsc::UnboundedReceiver<(u64, Instant)>,
    /// The latest report, for progress display.
    latest: Arc<AtomicU64>,
}

impl WorkerProcess {
    /// Starts the worker `spec` describes, logging to `log`.
    pub(crate) fn start(spec: &WorkerSpec, log: &Path) -> anyhow::Result<Self> {
        let log_file = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = spec
            .command()
            .and_then(|mut command: Command| {
                command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log_file).spawn()
            })
            .with_context(|| format!("cannot start the {} worker", spec.side))?;
        let stdout = child.stdout.take().context("the worker's standard output is not piped")?;
        let (sender, reports) = mpsc::unbounded_channel();
        let latest = Arc::new(AtomicU64::new(0));
        let latest_seen = Arc::clone(&latest);
        let reading = std::thread::Builder::new().name("bench-reader".into()).spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let arrived = Instant::now();
                if let Some(count) = crate::watcher::parse(&line) {
                    latest_seen.store(count, Ordering::Relaxed);
                    if sender.send((count, arrived)).is_err() {
                        return;
                    }
                }
            }
        });
        let mut worker = Self { child, log: log.to_owned(), reports, latest };
        if let Err(e) = reading {
            worker.kill();
            bail!("cannot start the thread reading the worker's output: {e}");
        }
        Ok(worker)
    }

    /// The worker's latest reported count of settled deliveries.
    pub(crate) fn settled(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.latest)
    }

    /// The worker's resident memory now and at its peak.
    pub(crate) fn memory(&self) -> anyhow::Result<Memory> {
        proc_status::read(self.child.id())
    }

    /// Waits up to `timeout` for the worker to report `target` settled deliveries; returns the
    /// instant that report arrived.
    pub(crate) async fn reached(&mut self, target: u64, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                Ok(Some((count, arrived))) if count >= target => return Ok(arrived),
                Ok(Some(_)) => {}
                Ok(None) => bail!("the worker stopped reporting: it exited{}", self.log_tail()),
                Err(_) => bail!(
                    "the worker settled {} of {target} deliveries in {timeout:?}{}",
                    self.latest.load(Ordering::Relaxed),
                    self.log_tail()
                ),
            }
        }
    }

    /// Fails if the worker has exited.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("the worker exited ({status}){}", self.log_tail()),
            Err(e) => bail!("cannot check on the worker: {e}"),
        }
    }

    /// Sends SIGTERM and waits for the worker to exit; kills it if it takes too long.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-s", "TERM", &pid]).status().context("cannot run kill")?;
        if !sent.success() {
            bail!("kill -s TERM {pid} failed");
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => bail!("the worker exited with {status} when stopped{}", self.log_tail()),
                Ok(None) if Instant::now() >= deadline => {
                    self.kill();
                    bail!("the worker did not stop within {STOP_TIMEOUT:?} of SIGTERM; killed it");
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => bail!("cannot wait for the worker: {e}"),
            }
        }
    }

    fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            drop(self.child.kill());
            drop(self.child.wait());
        }
    }

    /// The end of the worker's log, to explain a failure.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n    ");
        if tail.is_empty() {
            format!(" (its log {} is empty)", self.log.display())
        } else {
            format!("; the end of its log {}:\n    {tail}", self.log.display())
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
