//! The command line of `lepus`.

use chrono::{DateTime, FixedOffset};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Operate Lepus: its workers, queues, dead letters, jobs and schedules.
#[derive(Debug, Parser)]
#[command(name = "lepus", version)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) broker: BrokerArgs,
    /// Print JSON (for scripts) instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// How long to wait for workers' replies, e.g. `2s`.
    #[arg(long, global = true, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The broker and how to reach it.
#[derive(Debug, Args)]
pub(crate) struct BrokerArgs {
    /// Broker URL; repeat, or separate with commas, for a cluster's nodes.
    #[arg(long, global = true, env = "LEPUS_AMQP_URL", value_delimiter = ',', default_value = lepus::DEFAULT_AMQP_URL, hide_env_values = true, hide_default_value = true)]
    amqp_url: Vec<String>,
    /// With several broker URLs, which to try first: `random` or `listed`.
    #[arg(long, global = true, env = "LEPUS_AMQP_URL_ORDER", default_value = "random")]
    pub(crate) amqp_url_order: lepus::UrlOrder,
    /// amqps://: a CA (PEM) to trust besides the system's.
    #[arg(long, global = true, env = "LEPUS_TLS_CA_FILE")]
    pub(crate) tls_ca_file: Option<PathBuf>,
    /// amqps://: the client certificate (PEM).
    #[arg(long, global = true, env = "LEPUS_TLS_CERT_FILE", requires = "tls_key_file")]
    pub(crate) tls_cert_file: Option<PathBuf>,
    /// amqps://: the client certificate's key (PEM).
    #[arg(long, global = true, env = "LEPUS_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub(crate) tls_key_file: Option<PathBuf>,
}

impl BrokerArgs {
    /// The broker URLs, joined by commas as `lepus::Connector` takes them.
    pub(crate) fn amqp_url(&self) -> String {
        self.amqp_url.iter().map(|url| url.trim()).filter(|url| !url.is_empty()).collect::<Vec<_>>().join(",")
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// The workers that answer a ping: name, queues, concurrency, active and processed jobs, uptime.
    Status,
    /// Each Lepus queue (those the workers consume, and any named) with its ready, unacked,
    /// consumers and dead letters.
    Queues {
        /// A queue to show besides those the workers consume; repeat for several.
        #[arg(long = "queue")]
        queues: Vec<String>,
        /// RabbitMQ's management API (for unacked counts), e.g. `http://localhost:15672`; by
        /// default the broker's host on port 15672 is tried.
        #[arg(long, env = "LEPUS_MANAGEMENT_URL")]
        management_url: Option<String>,
    },
    /// Ask the workers what they run, which jobs they know, or their statistics.
    Inspect {
        /// What to ask.
        #[arg(value_enum)]
        what: Inspection,
        /// Ask only this worker (its node name).
        #[arg(long)]
        worker: Option<String>,
    },
    /// Revoke jobs by id on every worker: not run when they arrive (also those waiting for an
    /// eta); with --terminate, stopped if they run.
    Revoke {
        /// Job ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Also stop the jobs that run now.
        #[arg(long)]
        terminate: bool,
    },
    /// List, requeue or purge a queue's dead letters.
    DeadLetters {
        /// The work queue whose dead letters to act on.
        #[arg(long, default_value = lepus::DEFAULT_QUEUE)]
        queue: String,
        #[command(subcommand)]
        action: DeadLetterAction,
    },
    /// Enqueue one job, now or later, and print its id.
    Enqueue {
        #[command(flatten)]
        job: JobArgs,
    },
    /// Enqueue one job and wait for its result; print it.
    Call {
        #[command(flatten)]
        job: JobArgs,
        /// How long to wait for the result.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// Enqueue a batch, one job per item, and print the batch id.
    Batch {
        /// The job name.
        job: String,
        /// The items, a JSON array: an object item is merged into the keyword arguments, any
        /// other item appended to the positional arguments.
        #[arg(long)]
        items: String,
        #[command(flatten)]
        send: SendArgs,
        /// A job to enqueue once all have finished; it gets the summary as keyword `batch`.
        #[arg(long)]
        callback: Option<String>,
        /// The callback's keyword arguments, a JSON object.
        #[arg(long, default_value = "{}", requires = "callback")]
        callback_kwargs: String,
    },
    /// Show a batch's progress.
    Progress {
        /// The batch id.
        batch: String,
        /// The batch was sent at most this long ago, e.g. `2h`: only that much of the progress
        /// stream is read (without it, windows ever further back until the batch is found).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
    },
    /// The schedules of a scheduler group: next ticks, last fire time, and the replica that leads.
    Schedules {
        /// The scheduler group.
        #[arg(long, env = "LEPUS_SCHEDULER_GROUP", default_value = "default")]
        group: String,
    },
}

/// What `lepus inspect` asks.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Inspection {
    /// The jobs running now.
    Active,
    /// The job names each worker runs.
    Registered,
    /// Each worker's statistics.
    Stats,
}

#[derive(Debug, Clone, Subcommand)]
pub(crate) enum DeadLetterAction {
    /// Show the dead letters (left in place), oldest first.
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Send dead letters back to their queue with their attempts reset.
    Requeue {
        /// The job id of the dead letter to send back.
        #[arg(required_unless_present = "all")]
        id: Option<String>,
        /// Send back every dead letter.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Delete every dead letter.
    Purge,
}

/// One job to send.
#[derive(Debug, Args)]
pub(crate) struct JobArgs {
    /// The job name.
    pub(crate) job: String,
    #[command(flatten)]
    pub(crate) send: SendArgs,
    /// Run it no earlier than this long from now, e.g. `90s`.
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "at")]
    pub(crate) delay: Option<Duration>,
    /// Run it no earlier than this time (RFC 3339, e.g. `2027-01-01T09:00:00+01:00`).
    #[arg(long)]
    pub(crate) at: Option<DateTime<FixedOffset>>,
}

/// A job's arguments, queue and options.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// Positional arguments, a JSON array.
    #[arg(long, default_value = "[]")]
    pub(crate) args: String,
    /// Keyword arguments, a JSON object.
    #[arg(long, default_value = "{}")]
    pub(crate) kwargs: String,
    /// The queue.
    #[arg(long, default_value = lepus::DEFAULT_QUEUE)]
    pub(crate) queue: String,
    /// Do not run a job that has not started this long after it was sent, e.g. `10m`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) expires: Option<Duration>,
    /// Run a failing job up to this many times in all.
    #[arg(long)]
    pub(crate) max_attempts: Option<u32>,
}
