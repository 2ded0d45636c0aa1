//! The worker processes: copies of this executable in the worker role, each in its own process
//! group (so Ctrl-C reaches only the demo, which then stops them in order) and each logging to its
//! own file, so that their logs do not flood the terminal.

use crate::console::errln;
use crate::worker_role::{ROLE_VARIABLE, WORKER_ROLE};
use anyhow::Context as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};

/// How long a worker may run its jobs after SIGTERM, and how much longer the demo waits for it.
const GRACE_PERIOD: &str = "10s";
const STOP_PATIENCE: Duration = Duration::from_secs(15);

/// What every worker process is told.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSettings {
    pub(crate) amqp_url: String,
    pub(crate) queue: String,
    pub(crate) concurrency: u16,
    pub(crate) delivery_limit: u32,
}

#[derive(Debug)]
struct WorkerProcess {
    number: usize,
    pid: u32,
    child: Child,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl WorkerProcess {
    fn label(&self) -> String {
        format!("worker {} (pid {})", self.number, self.pid)
    }

    /// The exit status, if the process has ended.
    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }
}

/// How one worker ended.
#[derive(Debug)]
pub(crate) struct Stopped {
    pub(crate) label: String,
    pub(crate) how: String,
    pub(crate) clean: bool,
}

/// The running worker processes and the directory of their logs.
#[derive(Debug)]
pub(crate) struct Workers {
    log_dir: PathBuf,
    processes: Vec<WorkerProcess>,
}

impl Workers {
    /// No workers yet; creates the log directory in the system's temporary directory.
    pub(crate) fn new(queue: &str) -> anyhow::Result<Self> {
        let log_dir = std::env::temp_dir().join(queue);
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("cannot create the log directory {}", log_dir.display()))?;
        Ok(Self { log_dir, processes: Vec::new() })
    }

    pub(crate) fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Starts `count` worker processes.
    pub(crate) fn start(&mut self, count: u16, settings: &WorkerSettings) -> anyhow::Result<()> {
        let program = std::env::current_exe().context("cannot find this program's executable to start workers")?;
        for number in 1..=usize::from(count) {
            let log = self.log_dir.join(format!("worker-{number}.log"));
            let file = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
            let mut command = Command::new(&program);
            command
                .env(ROLE_VARIABLE, WORKER_ROLE)
                .env("LEPUS_AMQP_URL", &settings.amqp_url)
                .env("NO_COLOR", "1")
                .args(["--queue", &settings.queue])
                .args(["--concurrency", &settings.concurrency.to_string()])
                .args(["--delivery-limit", &settings.delivery_limit.to_string()])
                .args(["--grace-period", GRACE_PERIOD])
                .stdin(Stdio::null())
                .stdout(file.try_clone()?)
                .stderr(file)
                .kill_on_drop(true);
            #[cfg(unix)]
            command.process_group(0);
            let child = command.spawn().with_context(|| format!("cannot start {}", program.display()))?;
            let pid = child.id().context("a worker process ended as it started")?;
            self.processes.push(WorkerProcess { number, pid, child, log, exit: None });
        }
        Ok(())
    }

    pub(crate) fn count(&self) -> usize {
        self.processes.len()
    }

    /// Describes the first worker that has ended, with the end of its log.
    pub(crate) fn ended(&mut self) -> Option<String> {
        let process = self.processes.iter_mut().find_map(|p| p.poll_exit().map(|status| (p, status)));
        process.map(|(p, status)| {
            let tail = log_tail(&p.log, 5);
            format!("{} {}; the end of its log ({}):\n{tail}", p.label(), describe(status), p.log.display())
        })
    }

    /// Whether every worker has ended.
    pub(crate) fn all_ended(&mut self) -> bool {
        self.processes.iter_mut().all(|p| p.poll_exit().is_some())
    }

    /// Jobs run by each worker process (`worker N (pid P)`, including those that ran none), from
    /// counts by the results' `worker` field (`host:pid`); unknown senders are listed as named.
    pub(crate) fn jobs_per_worker(&self, by_node: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
        let mut rows: Vec<(String, u64)> = self.processes.iter().map(|p| (p.label(), 0)).collect();
        for (node, &jobs) in by_node {
            let pid = node.rsplit_once(':').and_then(|(_, pid)| pid.parse::<u32>().ok());
            match self.processes.iter().position(|p| Some(p.pid) == pid) {
                Some(index) => rows[index].1 += jobs,
                None => rows.push((node.clone(), jobs)),
            }
        }
        rows
    }

    /// Sends SIGTERM to every worker still running, waits for each to exit (killing any that
    /// outlives its grace period) and says how each ended.
    pub(crate) async fn stop(self) -> Vec<Stopped> {
        let mut processes = self.processes;
        for process in &mut processes {
            if process.poll_exit().is_none() {
                terminate(process.pid).await;
            }
        }
        let deadline = tokio::time::Instant::now() + STOP_PATIENCE;
        let mut stopped = Vec::with_capacity(processes.len());
        for mut process in processes {
            let label = process.label();
            let status = match process.exit {
                Some(status) => Ok(status),
                None => match tokio::time::timeout_at(deadline, process.child.wait()).await {
                    Ok(waited) => waited.map_err(|e| format!("could not be waited for: {e}")),
                    Err(_) => {
                        drop(process.child.start_kill());
                        drop(process.child.wait().await);
                        Err(format!("did not stop within {STOP_PATIENCE:?} and was killed"))
                    }
                },
            };
            stopped.push(match status {
                Ok(status) => Stopped { label, how: describe(status), clean: status.success() },
                Err(how) => Stopped { label, how, clean: false },
            });
        }
        stopped
    }
}

/// `kill -TERM <pid>`: a worker's signal to finish its running jobs and exit.
async fn terminate(pid: u32) {
    let sent = Command::new("kill").args(["-TERM", &pid.to_string()]).stdin(Stdio::null()).status().await;
    if let Err(e) = sent {
        errln!("lepus-demo: cannot run `kill -TERM {pid}`: {e}");
    }
}

fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exited with code {code}"),
        None => format!("ended by {status}"),
    }
}

/// The last `lines` lines of a log file, indented.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = all.len().saturating_sub(lines);
    all[start..].iter().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}
