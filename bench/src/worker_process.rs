//! A worker process as the orchestrator sees it: this binary in a worker role, started and stopped
//! by the harness the demo and the tests share ([`lepus_demo::process`]); each `settled` line and
//! each `ran` line ([`crate::stamp`]) it prints is timestamped the moment it arrives, and its
//! standard error goes to a log file.

use crate::proc_status::{self, Memory};
use crate::role::WorkerSpec;
use crate::stamp::{self, Ran};
use anyhow::{Context, bail};
use lepus_demo::process::Process;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long a worker may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running worker process.
#[derive(Debug)]
pub(crate) struct WorkerProcess {
    process: Process,
    /// Every report, with the instant it arrived.
    reports: mpsc::UnboundedReceiver<(u64, Instant)>,
    /// The latest report, for progress display.
    latest: Arc<AtomicU64>,
    /// Every run of `bench.stamp`, with the instant its line arrived, until taken.
    runs: Option<mpsc::UnboundedReceiver<(Ran, Instant)>>,
}

impl WorkerProcess {
    /// Starts the worker `spec` describes, logging to `log`.
    pub(crate) fn start(spec: &WorkerSpec, log: &Path) -> anyhow::Result<Self> {
        Self::start_with_env(spec, log, &[])
    }

    /// Like [`WorkerProcess::start`], with more environment variables (`LEPUS_*` settings the
    /// stock worker reads, say).
    pub(crate) fn start_with_env(spec: &WorkerSpec, log: &Path, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut command = spec.command().context("cannot find this program")?;
        command.envs(env.iter().copied());
        let (process, mut lines) = Process::start_reading_stdout(command, spec.side.to_string(), log)
            .with_context(|| format!("cannot start the {} worker", spec.side))?;
        let (sender, reports) = mpsc::unbounded_channel();
        let (ran, runs) = mpsc::unbounded_channel();
        let latest = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&latest);
        tokio::spawn(async move {
            while let Some((line, arrived)) = lines.recv().await {
                if let Some(count) = crate::watcher::parse(&line) {
                    seen.store(count, Ordering::Relaxed);
                    if sender.send((count, arrived)).is_err() {
                        return;
                    }
                } else if let Some(run) = stamp::parse(&line) {
                    // Nobody listens once the runs are no longer wanted.
                    let _ = ran.send((run, arrived));
                }
            }
        });
        Ok(Self { process, reports, latest, runs: Some(runs) })
    }

    /// The runs of `bench.stamp` this worker reports, as they arrive; `None` once taken.
    pub(crate) fn take_runs(&mut self) -> Option<mpsc::UnboundedReceiver<(Ran, Instant)>> {
        self.runs.take()
    }

    /// The worker's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The worker's latest reported count of settled deliveries.
    pub(crate) fn settled(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.latest)
    }

    /// The CPU time the worker has used so far, in seconds.
    pub(crate) fn cpu_seconds(&self) -> anyhow::Result<f64> {
        proc_status::cpu_seconds(self.process.pid())
    }

    /// The worker's resident memory now and at its peak.
    pub(crate) fn memory(&self) -> anyhow::Result<Memory> {
        proc_status::read(self.process.pid())
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
        match self.process.exit_status() {
            None => Ok(()),
            Some(status) => bail!("the worker exited ({status}){}", self.log_tail()),
        }
    }

    /// Sends SIGTERM and waits for the worker to exit; kills it if it takes too long.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        let stopped = self.process.stop(STOP_TIMEOUT).await.context("cannot stop the worker")?;
        if !stopped.clean() {
            bail!("the worker {stopped} when stopped{}", self.log_tail());
        }
        Ok(())
    }

    /// The end of the worker's log, to explain a failure.
    fn log_tail(&self) -> String {
        match self.process.log_tail(5) {
            tail if tail.is_empty() => format!(" (its log {} is empty)", self.process.log_path().display()),
            tail => format!("; the end of its log {}:\n{tail}", self.process.log_path().display()),
        }
    }
}
