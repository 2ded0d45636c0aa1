//! The `lepus-worker` role: the stock Lepus worker, started through `lepus_worker::cli::run` with
//! the demo jobs, exactly as the `lepus-worker` binary runs; the only additions are the thread that
//! reports its settled deliveries from [`lepus_worker::Worker::stats`] and the bench's own job,
//! [`crate::stamp`]. With `--metrics` the worker also serves its metrics, and with `--events`
//! sends Celery's events, as a deployed one would.

use crate::role::WorkerSpec;
use clap::Parser;
use lepus_worker::cli::Args;
use std::process::ExitCode;

pub(crate) fn run(spec: &WorkerSpec) -> ExitCode {
    let concurrency = spec.concurrency.to_string();
    let delivery_limit = lepus::DEFAULT_DELIVERY_LIMIT.to_string();
    let mut command_line = vec![
        "lepus-worker",
        "--amqp-url",
        &spec.amqp_url,
        "--queue",
        &spec.queue,
        "--concurrency",
        &concurrency,
        "--delivery-limit",
        &delivery_limit,
        "--grace-period",
        "10s",
        "--log-format",
        "text",
    ];
    if let Some(address) = &spec.metrics_addr {
        command_line.extend(["--metrics-addr", address]);
    }
    if spec.events {
        command_line.push("--events");
    }
    let args = match Args::try_parse_from(command_line) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("lepus-bench worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut watching = Ok(());
    let exit = lepus_worker::cli::run(args, |worker| {
        let stats = worker.stats();
        watching = crate::watcher::spawn(&spec.targets, move || stats.settled());
        lepus_demo::jobs::register(worker).register(crate::stamp::run)
    });
    match watching {
        Ok(()) => exit,
        Err(e) => {
            eprintln!("lepus-bench worker: cannot start the reporting thread: {e}");
            ExitCode::FAILURE
        }
    }
}
