//! `lepus-demo`: a self-contained tour of Lepus. It starts a few worker processes on a queue of
//! its own, sends them a few thousand demo jobs, checks every result, shows how the work spread
//! over the processes, then stops the workers and removes everything it created on the broker.
//!
//! The same executable is also the worker: started with `LEPUS_DEMO_ROLE=worker` it runs the
//! `lepus-worker` command line with the demo jobs (see [`worker_role`]).

mod connect;
mod console;
mod jobs;
mod options;
mod orchestrator;
mod plan;
mod progress;
mod queues;
mod summary;
mod tally;
mod worker_role;
mod workers;

use clap::Parser;
use console::errln;
use std::process::ExitCode;

fn main() -> ExitCode {
    if worker_role::is_worker() {
        return worker_role::run();
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
