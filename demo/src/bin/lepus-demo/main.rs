//! `lepus-demo`: a self-contained tour of Lepus. It starts a few worker processes on a queue of
//! its own and scheduler replicas of a group of its own (one leads, the others stand by), sends
//! the workers a few thousand demo jobs and a batch, checks every result, shows how the work spread
//! over the processes, counts what the schedulers fired, then stops everything and removes what it
//! created on the broker. `lepus-demo events` is the events demo instead: a publisher of order
//! events and three subscribing services (see [`events`]).
//!
//! The same executable is also the workers and the schedulers: started with `LEPUS_DEMO_ROLE=worker`
//! it runs the `lepus-worker` command line with the demo jobs and `demo.record`, with
//! `LEPUS_DEMO_ROLE=scheduler` the `lepus-scheduler` command line.

mod children;
mod cleanup;
mod client_batch;
mod connect;
mod console;
mod events;
mod jobs;
mod options;
mod run;
mod schedules;
mod services;

use children::ROLE_VARIABLE;
use clap::Parser;
use console::errln;
use std::process::ExitCode;

fn main() -> ExitCode {
    if let Some(role) = std::env::var_os(ROLE_VARIABLE) {
        return match role.to_str() {
            Some(children::WORKER) => {
                let args = lepus_worker::cli::Args::parse_from(std::env::args_os());
                lepus_worker::cli::run(args, |worker| schedules::register_record(lepus_demo::jobs::register(worker)))
            }
            Some(children::SCHEDULER) => lepus_scheduler::cli::main(),
            _ => {
                errln!(
                    "lepus-demo: {ROLE_VARIABLE}={role:?} is not a role (use `worker` or `scheduler`, or unset it)."
                );
                ExitCode::from(2)
            }
        };
    }
    let mut options = options::Options::parse();
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => match options.command.take() {
            Some(options::Command::Events(events)) => runtime.block_on(events::run(&options.amqp_url, events)),
            None => runtime.block_on(run::run(options)),
        },
        Err(e) => {
            errln!("lepus-demo: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
