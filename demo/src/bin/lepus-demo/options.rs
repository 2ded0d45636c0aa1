//! The demo's command-line flags.

use clap::{Args, Parser, Subcommand};
use std::time::Duration;

/// Runs a Lepus demo: starts worker processes and scheduler replicas, sends the workers demo jobs
/// and a batch, lets the schedulers fire, checks every result and firing, and cleans up after
/// itself.
#[derive(Debug, Parser)]
#[command(name = "lepus-demo", version)]
pub(crate) struct Options {
    /// Another demo instead of the jobs and schedulers one.
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    /// Broker URL.
    #[arg(long, global = true, env = "LEPUS_AMQP_URL", default_value = lepus::DEFAULT_AMQP_URL, hide_env_values = true, hide_default_value = true)]
    pub(crate) amqp_url: String,
    /// Worker processes to start.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) workers: u16,
    /// Jobs to send.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) jobs: u32,
    /// Jobs each worker process runs at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) concurrency: u16,
    /// Jobs submitted and not yet answered, at most.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) in_flight: u32,
    /// Scheduler replicas to start: one leads, the others stand by.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=8))]
    pub(crate) schedulers: u16,
    /// Seconds the schedulers run at least (they also run while the jobs are processed).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub(crate) schedule_seconds: u32,
    /// How long to wait for one job's result, e.g. `30s`.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
}

/// The other demos.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Events between services: a publisher of order events and three subscribing services
    /// (billing, shipping, analytics), each event checked to be handled once by each service
    /// that subscribes to it.
    Events(EventsOptions),
}

/// The flags of `lepus-demo events`.
#[derive(Debug, Args)]
pub(crate) struct EventsOptions {
    /// Orders to publish events of (`orders.created`, then `orders.paid`, for each).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) orders: u32,
    /// How long the services may take to handle every event, e.g. `30s`.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
}
