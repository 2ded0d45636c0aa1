//! `lepus-demo`: a self-contained tour of Lepus. It starts a few worker processes on a queue of
//! its own and scheduler replicas of a group of its own (one leads, the others stand by), sends
//! the workers a few thousand demo jobs and a batch, checks every result, shows how the work spread
//! over the processes, counts what the schedulers fired, then stops everything and removes what it
//! created on the broker.
//!
//! The same executable is also the workers and the schedulers: started with `LEPUS_DEMO_ROLE=worker`
//! it runs the `lepus-worker` command line with the demo jobs, with `LEPUS_DEMO_ROLE=scheduler` the
//! `lepus-scheduler` command line (see [`roles`]).

mod children;
mod cleanup;
mod client_batch;
mod connect;
mod console;
mod firings;
mod jobs;
mod options;
mod orchestrator;
mod plan;
mod progress;
mod queues;
mod record;
mod roles;
mod schedule_file;
mod schedule_report;
mod schedulers;
mod summary;
mod tally;
mod verdict;
mod workers;

use clap::Parser;
use console::errln;
use roles::{ROLE_VARIABLE, Role};
use std::process::ExitCode;

fn main() -> ExitCode {
    match Role::from_env() {
        Ok(Some(role)) => return role.run(),
        Ok(None) => {}
        Err(other) => {
            errln!("lepus-demo: {ROLE_VARIABLE}={other:?} is not a role (use `worker` or `scheduler`, or unset it).");
            return ExitCode::from(2);
        }
    }
    let options = options::Options::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            errln!("lepus-demo: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(orchestrator::run(options))
}
