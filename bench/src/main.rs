//! `lepus-bench`: Lepus against the raw-lapin ceiling, measured in one run on the same broker.
//!
//! Each round runs both sides on fresh quorum queues declared the Lepus way, with persistent
//! messages and publisher confirms, and a worker in its own process:
//!
//! - (a) jobs/s for N `demo.noop` jobs, from the first publish to the worker's N-th ack;
//! - (b) jobs/s for N jobs whose results go to a reply queue, to the N-th result received;
//! - (c) round-trip latency of one call at a time (p50, p99);
//! - the worker's resident memory at rest and at its peak.
//!
//! `--bulk`, `--delays`, `--scale`, `--memory`, `--batches` and `--fanout` measure other things
//! instead, each in its own module: [`bulk`], [`delays`], [`scale`], [`memory`], [`batches`],
//! [`fanout`] (data events fanned out to 3 services). Flow control is priced against plain jobs:
//! `--priorities` ([`priorities`]: jobs over a queue's priority tiers against the queue alone),
//! `--rate-limit` ([`rate_limit`]: a rate limit set above the throughput), `--unique`
//! ([`unique`]), `--concurrency-key` ([`concurrency_keys`]).
//!
//! The binary also plays the worker processes: re-executed with `LEPUS_BENCH_ROLE` set, it runs
//! the stock Lepus worker or a plain lapin worker instead (see [`role`]).
//!
//! ```text
//! cargo run --release -p lepus-bench -- [--jobs N] [--rounds R] [--batches [--batch-size B]] [--fanout]
//! ```

mod admin;
mod batch_producer;
mod batches;
mod bench;
mod bulk;
mod concurrency_keys;
mod delays;
mod fanout;
mod figures;
mod fleet;
mod lepus_producer;
mod lepus_service_role;
mod lepus_worker_role;
mod memory;
mod monitor;
mod options;
mod phases;
mod priorities;
mod proc_status;
mod producer;
mod progress;
mod rate_limit;
mod raw_fanout;
mod raw_producer;
mod raw_worker_role;
mod report;
mod role;
mod rss_sampler;
mod runs;
mod scale;
mod stamp;
mod stock_worker;
mod unique;
mod watcher;
mod worker_process;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    match role::from_env() {
        Some(Ok(spec)) if spec.side == role::Side::Lepus && spec.service.is_some() => {
            return lepus_service_role::run(&spec);
        }
        Some(Ok(spec)) if spec.side == role::Side::Lepus => return lepus_worker_role::run(&spec),
        Some(Ok(spec)) => return raw_worker_role::run(&spec),
        Some(Err(e)) => {
            eprintln!("lepus-bench worker: {e}");
            return ExitCode::FAILURE;
        }
        None => {}
    }
    let options = options::Options::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("lepus-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let admin = match admin::Admin::connect(&options.amqp_url).await {
            Ok(admin) => admin,
            Err(unreachable) => {
                eprintln!("{unreachable}");
                return ExitCode::FAILURE;
            }
        };
        let outcome = if options.batches {
            batches::run(&options, &admin).await
        } else if options.concurrency_key {
            concurrency_keys::run(&options, &admin).await
        } else if options.bulk {
            bulk::run(&options, &admin).await
        } else if options.delays {
            delays::run(&options, &admin).await
        } else if options.scale {
            scale::run(&options, &admin).await
        } else if options.fanout {
            fanout::run(&options, &admin).await
        } else if options.priorities {
            priorities::run(&options, &admin).await
        } else if options.rate_limit {
            rate_limit::run(&options, &admin).await
        } else if options.memory {
            memory::run(&options, &admin).await
        } else if options.unique {
            unique::run(&options, &admin).await
        } else {
            bench::run(&options, &admin).await
        };
        admin.close().await;
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lepus-bench: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}
