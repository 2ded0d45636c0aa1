//! [`Process`]: a child process that the demo, the benchmark or a test starts, signals and stops.
//! Its output goes to a log file (or, for standard output, back to the parent line by line), it
//! runs in a process group of its own (a Ctrl-C at the terminal reaches only the parent, which
//! then stops its children in order), and it is killed if it is still running when dropped.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{self, BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A line of a child's standard output and the instant it arrived.
pub type Line = (String, Instant);

/// A running (or ended) child process.
#[derive(Debug)]
pub struct Process {
    label: String,
    child: Child,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

/// How a process ended when it was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Its exit status.
    pub status: ExitStatus,
    /// Whether it outlived its patience after SIGTERM and was killed.
    pub killed: bool,
}

impl Stopped {
    /// Whether it exited by itself with status 0.
    #[must_use]
    pub fn clean(&self) -> bool {
        !self.killed && self.status.success()
    }
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.killed, self.status.code()) {
            (true, _) => f.write_str("did not stop in time and was killed"),
            (false, Some(code)) => write!(f, "exited with code {code}"),
            (false, None) => write!(f, "ended by {}", self.status),
        }
    }
}

impl Process {
    /// Starts `command` with standard input closed and standard output and error appended to the
    /// file `log`; `label` names it in messages.
    pub fn start(command: Command, label: impl Into<String>, log: impl Into<PathBuf>) -> io::Result<Self> {
        Self::spawn(command, label.into(), log.into(), false)
    }

    /// Like [`Process::start`], but standard output comes back line by line, each with the instant
    /// it arrived, instead of going to the log.
    pub fn start_reading_stdout(
        command: Command,
        label: impl Into<String>,
        log: impl Into<PathBuf>,
    ) -> io::Result<(Self, mpsc::UnboundedReceiver<Line>)> {
        let mut process = Self::spawn(command, label.into(), log.into(), true)?;
        let stdout = process.child.stdout.take().ok_or_else(|| io::Error::other("standard output is not piped"))?;
        let (sender, lines) = mpsc::unbounded_channel();
        let reading = std::thread::Builder::new().name("child-stdout".into()).spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send((line, Instant::now())).is_err() {
                    return;
                }
            }
        });
        if let Err(e) = reading {
            process.kill();
            return Err(e);
        }
        Ok((process, lines))
    }

    fn spawn(mut command: Command, label: String, log: PathBuf, pipe_stdout: bool) -> io::Result<Self> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::File::create(&log)?;
        let stdout = if pipe_stdout { Stdio::piped() } else { Stdio::from(file.try_clone()?) };
        command.stdin(Stdio::null()).stdout(stdout).stderr(file).process_group(0);
        let child = command
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", command.get_program().display())))?;
        Ok(Self { label, child, log, exit: None })
    }

    /// The label it was started with.
    #[must_use]
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Its process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log file.
    #[must_use]
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What it logged so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` non-empty lines of its log, indented, to explain a failure.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        all[all.len().saturating_sub(lines)..].iter().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
    }

    /// Sends `signal` to it, unless it has ended.
    pub fn signal(&mut self, signal: Signal) -> io::Result<()> {
        if self.exit_status().is_some() {
            return Ok(());
        }
        let pid = i32::try_from(self.pid()).map_err(io::Error::other)?;
        kill(Pid::from_raw(pid), signal).map_err(io::Error::from)
    }

    /// Sends SIGTERM: finish what you are doing and exit.
    pub fn terminate(&mut self) -> io::Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if self.exit_status().is_none() {
            drop(self.child.kill());
            if let Ok(status) = self.child.wait() {
                self.exit = Some(status);
            }
        }
    }

    /// Its exit status, if it has ended.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Waits up to `timeout` for it to end.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits up to `patience` for it to exit, then kills it.
    pub async fn stop(&mut self, patience: Duration) -> io::Result<Stopped> {
        self.terminate()?;
        if let Some(status) = self.wait_exit(patience).await {
            return Ok(Stopped { status, killed: false });
        }
        self.kill();
        let status = self.exit_status().ok_or_else(|| io::Error::other("killed, but not reaped"))?;
        Ok(Stopped { status, killed: true })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_process_logs_and_stops_on_sigterm() {
        let log = std::env::temp_dir().join(format!("lepus-process-test-{}.log", std::process::id()));
        let mut command = Command::new("sh");
        command.args(["-c", "trap 'echo bye; exit 3' TERM; echo started; while true; do sleep 0.05; done"]);
        let mut process = Process::start(command, "sh", &log).expect("starts");
        for _ in 0..100 {
            if process.log().contains("started") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stopped = process.stop(Duration::from_secs(5)).await.expect("stopped");
        assert_eq!((stopped.status.code(), stopped.killed), (Some(3), false), "{}", process.log());
        assert!(process.log().contains("bye"));
        assert_eq!(stopped.to_string(), "exited with code 3");
        drop(std::fs::remove_file(log));
    }

    #[tokio::test]
    async fn one_that_ignores_sigterm_is_killed_after_its_patience() {
        let log = std::env::temp_dir().join(format!("lepus-process-test-ignore-{}.log", std::process::id()));
        let mut command = Command::new("sh");
        command.args(["-c", "trap '' TERM; echo ready; while true; do sleep 0.05; done"]);
        let (mut process, mut lines) = Process::start_reading_stdout(command, "stubborn", &log).expect("starts");
        let (first, _) = lines.recv().await.expect("a line");
        assert_eq!(first, "ready");
        let stopped = process.stop(Duration::from_millis(300)).await.expect("stopped");
        assert!(stopped.killed && !stopped.clean());
        drop(std::fs::remove_file(log));
    }
}
