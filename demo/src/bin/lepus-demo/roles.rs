//! The hidden roles: the demo starts copies of its own executable with `LEPUS_DEMO_ROLE` set.
//! A worker copy is an ordinary Lepus worker running the demo jobs and `demo.record`; a scheduler
//! copy is the `lepus-scheduler` command line, run with the arguments the demo passed.

use clap::Parser;
use std::process::ExitCode;

/// The variable that selects the role.
pub(crate) const ROLE_VARIABLE: &str = "LEPUS_DEMO_ROLE";

/// What a copy of the demo is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `lepus-worker` with the demo jobs.
    Worker,
    /// `lepus-scheduler`.
    Scheduler,
}

impl Role {
    /// The role this process was started in: `Ok(None)` for the demo itself, `Err` with the value
    /// if it names no role.
    pub(crate) fn from_env() -> Result<Option<Self>, String> {
        match std::env::var_os(ROLE_VARIABLE) {
            None => Ok(None),
            Some(role) if role == Self::Worker.as_str() => Ok(Some(Self::Worker)),
            Some(role) if role == Self::Scheduler.as_str() => Ok(Some(Self::Scheduler)),
            Some(other) => Err(other.to_string_lossy().into_owned()),
        }
    }

    /// Its value of `LEPUS_DEMO_ROLE`, also the stem of its processes' labels and log files.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Worker => "worker",
            Self::Scheduler => "scheduler",
        }
    }

    /// Runs the role with the flags the demo passed, until SIGTERM.
    pub(crate) fn run(self) -> ExitCode {
        match self {
            Self::Worker => {
                let args = lepus_worker::cli::Args::parse_from(std::env::args_os());
                lepus_worker::cli::run(args, |worker| crate::record::register(lepus_demo::jobs::register(worker)))
            }
            Self::Scheduler => lepus_scheduler::cli::main(),
        }
    }
}
