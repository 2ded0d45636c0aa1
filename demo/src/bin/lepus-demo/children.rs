//! The demo's child processes: copies of this executable in another role (worker, scheduler),
//! each in its own process group (so Ctrl-C reaches only the demo, which then stops them in order)
//! and each logging to its own file, so that their logs do not flood the terminal.

use crate::console::errln;
use crate::roles::{ROLE_VARIABLE, Role};
use anyhow::Context as _;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};

/// One child process.
#[derive(Debug)]
pub(crate) struct Process {
    label: String,
    pid: u32,
    child: Child,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl Process {
    /// `worker 2 (pid 1234)`.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// The exit status, if the process has ended.
    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }
}

/// How one child process ended.
#[derive(Debug)]
pub(crate) struct Stopped {
    pub(crate) label: String,
    pub(crate) how: String,
    pub(crate) clean: bool,
}

/// What one child process is started with, besides its role.
#[derive(Debug)]
pub(crate) struct Spawn<'a> {
    pub(crate) amqp_url: &'a str,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(&'static str, &'a OsStr)>,
}

/// The child processes of one role.
#[derive(Debug)]
pub(crate) struct Children {
    role: Role,
    log_dir: PathBuf,
    /// How long a process may take to exit after SIGTERM before it is killed.
    patience: Duration,
    processes: Vec<Process>,
    stopped: bool,
}

impl Children {
    /// None yet; their logs go to `log_dir`.
    pub(crate) fn new(role: Role, log_dir: &Path, patience: Duration) -> Self {
        Self { role, log_dir: log_dir.to_owned(), patience, processes: Vec::new(), stopped: false }
    }

    /// Starts one more process; it is numbered from 1 and logs to `<role>-<number>.log`.
    pub(crate) fn spawn(&mut self, spawn: Spawn<'_>) -> anyhow::Result<()> {
        let role = self.role.as_str();
        let program = std::env::current_exe().with_context(|| format!("cannot find this program to start a {role}"))?;
        let number = self.processes.len() + 1;
        let log = self.log_dir.join(format!("{role}-{number}.log"));
        let file = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new(&program);
        command
            .env(ROLE_VARIABLE, role)
            .env("LEPUS_AMQP_URL", spawn.amqp_url)
            .env("NO_COLOR", "1")
            .envs(spawn.env)
            .args(&spawn.args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true);
        #[cfg(unix)]
        command.process_group(0);
        let child = command.spawn().with_context(|| format!("cannot start {}", program.display()))?;
        let pid = child.id().with_context(|| format!("a {role} process ended as it started"))?;
        let label = format!("{role} {number} (pid {pid})");
        self.processes.push(Process { label, pid, child, log, exit: None });
        Ok(())
    }

    pub(crate) fn count(&self) -> usize {
        self.processes.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Process> {
        self.processes.iter()
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Describes the first process that has ended, with the end of its log.
    pub(crate) fn ended(&mut self) -> Option<String> {
        let process = self.processes.iter_mut().find_map(|p| p.poll_exit().map(|status| (p, status)));
        process.map(|(p, status)| {
            let tail = log_tail(&p.log, 5);
            format!("{} {}; the end of its log ({}):\n{tail}", p.label, describe(status), p.log.display())
        })
    }

    /// Whether every process has ended.
    pub(crate) fn all_ended(&mut self) -> bool {
        self.processes.iter_mut().all(|p| p.poll_exit().is_some())
    }

    /// Sends SIGTERM to every process still running, waits for each to exit (killing any that
    /// outlives the patience) and says how each ended.
    pub(crate) async fn stop(&mut self) -> Vec<Stopped> {
        self.stopped = true;
        for process in &mut self.processes {
            if process.poll_exit().is_none() {
                terminate(process.pid).await;
            }
        }
        let deadline = tokio::time::Instant::now() + self.patience;
        let mut stopped = Vec::with_capacity(self.processes.len());
        for process in &mut self.processes {
            let label = process.label.clone();
            let status = match process.exit {
                Some(status) => Ok(status),
                None => match tokio::time::timeout_at(deadline, process.child.wait()).await {
                    Ok(waited) => waited.map_err(|e| format!("could not be waited for: {e}")),
                    Err(_) => {
                        drop(process.child.start_kill());
                        drop(process.child.wait().await);
                        Err(format!("did not stop within {:?} and was killed", self.patience))
                    }
                },
            };
            if let Ok(status) = status {
                process.exit = Some(status);
            }
            stopped.push(match status {
                Ok(status) => Stopped { label, how: describe(status), clean: status.success() },
                Err(how) => Stopped { label, how, clean: false },
            });
        }
        stopped
    }
}

/// `kill -TERM <pid>`: a child's signal to finish what it is doing and exit.
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
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = all.len().saturating_sub(lines);
    all[start..].iter().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}
