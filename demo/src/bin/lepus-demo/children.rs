//! The demo's child processes: copies of this executable started as worker processes or as
//! scheduler replicas ([`ROLE_VARIABLE`]), each a [`Process`] in a process group of its own
//! (a Ctrl-C reaches only the demo, which then stops them in order) with its log file in the
//! demo's directory, so that their logs do not flood the terminal.

use crate::console::outln;
use crate::schedules::{RECORDS_FILE, RECORDS_VARIABLE};
use anyhow::Context as _;
use lepus_demo::process::Process;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The variable that makes a copy of the demo a worker or a scheduler replica.
pub(crate) const ROLE_VARIABLE: &str = "LEPUS_DEMO_ROLE";

/// The roles, as [`ROLE_VARIABLE`] names them.
pub(crate) const WORKER: &str = "worker";
pub(crate) const SCHEDULER: &str = "scheduler";

/// The processes of one role, numbered from 1.
#[derive(Debug)]
pub(crate) struct Children {
    role: &'static str,
    processes: Vec<Process>,
}

impl Children {
    pub(crate) fn new(role: &'static str) -> Self {
        Self { role, processes: Vec::new() }
    }

    /// Starts `count` processes with `args`; each logs to `<dir>/<role>-<number>.log`, and the
    /// workers write the runs of `demo.record` down in `dir`.
    pub(crate) fn start(&mut self, count: u16, dir: &Path, amqp_url: &str, args: &[&str]) -> anyhow::Result<()> {
        let program = std::env::current_exe().context("cannot find this program to start its copies")?;
        for _ in 0..count {
            let number = self.processes.len() + 1;
            let mut command = Command::new(&program);
            command.args(args).env(ROLE_VARIABLE, self.role).env("LEPUS_AMQP_URL", amqp_url);
            command.env("NO_COLOR", "1").env(RECORDS_VARIABLE, dir.join(RECORDS_FILE));
            let log = dir.join(format!("{}-{number}.log", self.role));
            self.processes.push(Process::start(command, format!("{} {number}", self.role), log)?);
        }
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.processes.len()
    }

    /// `worker 2 (pid 1234)` for each process, in order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.processes.iter().map(|p| format!("{} (pid {})", p.label(), p.pid())).collect()
    }

    /// The index of the process that a node name (`host:pid`) belongs to.
    pub(crate) fn index_of(&self, node: &str) -> Option<usize> {
        let pid = node.rsplit_once(':').and_then(|(_, pid)| pid.parse::<u32>().ok())?;
        self.processes.iter().position(|p| p.pid() == pid)
    }

    /// How many are still running.
    pub(crate) fn running(&mut self) -> usize {
        self.processes.iter_mut().map(Process::exit_status).filter(Option::is_none).count()
    }

    /// Describes the first process that has ended, with the end of its log.
    pub(crate) fn ended(&mut self) -> Option<String> {
        self.processes.iter_mut().find_map(|p| {
            let status = p.exit_status()?;
            let (label, pid, log) = (p.label(), p.pid(), p.log_path().display());
            Some(format!("{label} (pid {pid}) ended ({status}); the end of its log ({log}):\n{}", p.log_tail(5)))
        })
    }

    /// Sends SIGTERM to every process, then waits for each to exit (killing any that outlives
    /// `patience`) and says how each ended; `true` if all exited by themselves with status 0.
    pub(crate) async fn stop(&mut self, what: &str, patience: Duration) -> bool {
        if self.processes.is_empty() {
            return true;
        }
        outln!();
        outln!("Stopping the {what} (SIGTERM)…");
        for process in &mut self.processes {
            drop(process.terminate());
        }
        let mut clean = true;
        let names = self.names();
        for (process, name) in self.processes.iter_mut().zip(names) {
            let stopped = process.stop(patience).await;
            let how = stopped.as_ref().map_or_else(|e| format!("could not be stopped: {e}"), ToString::to_string);
            outln!("  {name} {how}");
            clean &= stopped.is_ok_and(|stopped| stopped.clean());
        }
        clean
    }
}
