//! The hidden worker role: the demo starts copies of its own executable with
//! `LEPUS_DEMO_ROLE=worker`, and each copy is an ordinary Lepus worker running the demo jobs.

use clap::Parser;
use std::process::ExitCode;

/// The variable that selects the role, and the value that means "be a worker".
pub(crate) const ROLE_VARIABLE: &str = "LEPUS_DEMO_ROLE";
pub(crate) const WORKER_ROLE: &str = "worker";

/// Whether this process was started as one of the demo's workers.
pub(crate) fn is_worker() -> bool {
    std::env::var_os(ROLE_VARIABLE).is_some_and(|role| role == WORKER_ROLE)
}

/// Runs the worker with the flags the demo passed (`--queue`, `--concurrency`, …), until SIGTERM.
pub(crate) fn run() -> ExitCode {
    let args = lepus_worker::cli::Args::parse_from(std::env::args_os());
    lepus_worker::cli::run(args, lepus_worker::demo::register)
}
