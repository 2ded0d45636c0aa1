//! The command line of `lepus-bench`.

use crate::role::Feature;
use clap::Parser;

/// Measures Lepus against plain lapin on the same broker, queue type and durability.
#[derive(Debug, Parser)]
#[command(name = "lepus-bench")]
pub(crate) struct Options {
    /// Jobs sent in each throughput phase, (a) and (b) [default: 20000]; with `--fanout`, the
    /// events published in each run [default: 50000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    jobs: Option<u64>,
    /// Rounds; each runs both sides, alternating which goes first.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rounds: u32,
    /// Calls timed in phase (c), one at a time.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) calls: u32,
    /// Untimed calls made first (they also set up each side's reply path).
    #[arg(long, default_value_t = 200)]
    pub(crate) warmup: u32,
    /// Publishes awaiting their confirm at once, on both sides.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) window: u32,
    /// Worker concurrency, which is also each worker's per-consumer prefetch.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) concurrency: u16,
    /// Give the raw side's jobs the very headers and body a Lepus `demo.noop` job carries, so
    /// both sides move the same bytes through the broker and the ratio is the framework's own cost
    /// (`--bulk` measures both ways in every run).
    #[arg(long)]
    pub(crate) raw_headers: bool,
    /// Price the metrics: measure Lepus with its worker serving metrics (`--metrics-addr`)
    /// against Lepus without, instead of Lepus against raw lapin. After each run the worker's
    /// `/metrics` must count every job it ran.
    #[arg(long, group = "mode")]
    pub(crate) metrics: bool,
    /// Price the events: measure Lepus with its worker sending Celery's events (`--events`, a
    /// monitor consuming them as Flower would) against Lepus without.
    #[arg(long, group = "mode")]
    pub(crate) events: bool,
    /// Price batch tracking: the same jobs sent as batches (each with a callback) against sent
    /// plainly, jobs/s of each (see `batches.rs`).
    #[arg(long, group = "mode")]
    pub(crate) batches: bool,
    /// Jobs per batch, with `--batches`.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) batch_size: u32,
    /// Price concurrency keys: the same jobs sent with one concurrency key (a limit above the
    /// worker's concurrency, `--key-limit`) against sent plainly, jobs/s of each (see
    /// `concurrency_keys.rs`).
    #[arg(long, group = "mode")]
    pub(crate) concurrency_key: bool,
    /// The key's limit, with `--concurrency-key`.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) key_limit: u32,
    /// Bulk enqueue: 100,000 jobs sent with `Client::enqueue_many` against raw lapin's confirmed
    /// publishes, same window (`--window`), no worker.
    #[arg(long, group = "mode")]
    pub(crate) bulk: bool,
    /// Delays: 100,000 jobs due over 60 s through the delay cascade; none may run early; their
    /// lateness, the cascade's rates and the worker's memory over the run.
    #[arg(long, group = "mode")]
    pub(crate) delays: bool,
    /// With `--delays`: the seconds over which the jobs are due (default 60). A short spread
    /// asks more of the cascade than it can give, so that how fast jobs leave it is its
    /// throughput.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) spread: u64,
    /// Scaling: sleep-bound jobs through 1, 2 and 4 worker processes; throughput against one
    /// worker and each worker's share.
    #[arg(long, group = "mode")]
    pub(crate) scale: bool,
    /// Memory: a worker's resident memory with 10,000 jobs queued and 10,000 delayed.
    #[arg(long, group = "mode")]
    pub(crate) memory: bool,
    /// Events fanned out: events published with `Client::publish` to 3 subscribed services (a
    /// worker process each) against raw lapin doing the same fan-out on a copy of the event
    /// topology, events/s to the last handling (see `fanout.rs`).
    #[arg(long, group = "mode")]
    pub(crate) fanout: bool,
    /// Unique jobs: N jobs each unique by a key of its own (`Request::unique`) against N plain
    /// jobs, both with `Client::enqueue` and `--window` in flight; enqueue and end-to-end jobs/s
    /// (see `unique.rs`).
    #[arg(long, group = "mode")]
    pub(crate) unique: bool,
    /// Priority tiers: the same jobs spread over a queue's three tiers (a worker with
    /// `priorities = strict`) against sent to the queue alone (a worker without), jobs/s of each
    /// (see `priorities.rs`).
    #[arg(long, group = "mode")]
    pub(crate) priorities: bool,
    /// Rate limits: the same jobs plainly and under a rate limit set at twice the plain jobs/s
    /// (a token taken from the broker per job), jobs/s of each (see `rate_limit.rs`).
    #[arg(long, group = "mode")]
    pub(crate) rate_limit: bool,
    /// Broker URL.
    #[arg(long, env = "LEPUS_AMQP_URL", default_value = lepus::DEFAULT_AMQP_URL, hide_env_values = true, hide_default_value = true)]
    pub(crate) amqp_url: String,
}

impl Options {
    /// Jobs sent in each throughput phase (`--jobs`, default 20,000).
    pub(crate) fn jobs(&self) -> u64 {
        self.jobs.unwrap_or(20_000)
    }

    /// Events published in each `--fanout` run (`--jobs`, default 50,000).
    pub(crate) fn events(&self) -> u64 {
        self.jobs.unwrap_or(50_000)
    }

    /// The feature priced, if any.
    pub(crate) fn feature(&self) -> Option<Feature> {
        if self.metrics {
            Some(Feature::Metrics)
        } else if self.events {
            Some(Feature::Events)
        } else {
            None
        }
    }
}
