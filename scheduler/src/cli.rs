//! The `lepus-scheduler` command line: run a replica, check a schedule file, or enqueue a job,
//! a delayed job or a batch and print its id.

use crate::{Scheduler, SchedulerConfig, load_schedules};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use lepus::protocol::Arguments;
use lepus::telemetry::LogFormat;
use lepus::{Batch, BatchId, Client, Request, RetryPolicy, shutdown_signal};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Periodic jobs and batches for Lepus workers.
#[derive(Debug, Parser)]
#[command(name = "lepus-scheduler", version)]
struct Cli {
    /// Broker URL.
    #[arg(long, global = true, env = "LEPUS_AMQP_URL", default_value = lepus::DEFAULT_AMQP_URL, hide_env_values = true, hide_default_value = true)]
    amqp_url: String,
    /// Log format: `text` or `json`.
    #[arg(long, global = true, env = "LEPUS_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scheduler replica: any number may run; one leads, the others stand by.
    Run {
        /// The schedule file (TOML).
        #[arg(long, env = "LEPUS_SCHEDULES", default_value = "schedules.toml")]
        schedules: PathBuf,
        /// The scheduler group: replicas of one group share the lead; other groups run apart.
        #[arg(long, env = "LEPUS_SCHEDULER_GROUP", default_value = "default")]
        group: String,
        /// Heartbeat of the leader's connection, e.g. `5s`: a silent leader is replaced within
        /// about two heartbeats.
        #[arg(long, env = "LEPUS_HEARTBEAT", default_value = "5s", value_parser = humantime::parse_duration)]
        heartbeat: Duration,
    },
    /// Check a schedule file and show each schedule's next ticks.
    Check {
        /// The schedule file (TOML).
        #[arg(long, env = "LEPUS_SCHEDULES", default_value = "schedules.toml")]
        schedules: PathBuf,
    },
    /// Enqueue one job, now or later, and print its id.
    Enqueue {
        /// The job name.
        job: String,
        #[command(flatten)]
        send: SendArgs,
        /// Run it no earlier than this long from now, e.g. `90s`.
        #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "at")]
        delay: Option<Duration>,
        /// Run it no earlier than this time (RFC 3339, e.g. `2027-01-01T09:00:00+01:00`).
        #[arg(long)]
        at: Option<DateTime<chrono::FixedOffset>>,
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
    },
}

#[derive(Debug, Args)]
struct SendArgs {
    /// Positional arguments, a JSON array.
    #[arg(long, default_value = "[]")]
    args: String,
    /// Keyword arguments, a JSON object.
    #[arg(long, default_value = "{}")]
    kwargs: String,
    /// The queue.
    #[arg(long, default_value = lepus::DEFAULT_QUEUE)]
    queue: String,
    /// Do not run a job that has not started this long after it was sent, e.g. `10m`.
    #[arg(long, value_parser = humantime::parse_duration)]
    expires: Option<Duration>,
    /// Run a failing job up to this many times in all.
    #[arg(long)]
    max_attempts: Option<u32>,
}

impl SendArgs {
    fn request(&self, job: &str, item: Option<Value>) -> Result<Request, String> {
        let mut args: Vec<Value> =
            serde_json::from_str(&self.args).map_err(|e| format!("--args must be a JSON array: {e}"))?;
        let mut kwargs: Map<String, Value> =
            serde_json::from_str(&self.kwargs).map_err(|e| format!("--kwargs must be a JSON object: {e}"))?;
        match item {
            Some(Value::Object(fields)) => kwargs.extend(fields),
            Some(other) => args.push(other),
            None => {}
        }
        let mut request = Request::task(job, Arguments { args, kwargs }).queue(self.queue.as_str());
        if let Some(expires) = self.expires {
            request = request.expires_in(expires);
        }
        if let Some(attempts) = self.max_attempts {
            request = request.retry(RetryPolicy::attempts(attempts));
        }
        Ok(request)
    }
}

/// Parses the command line and runs the command. Exits 0 on success, 1 on failure (one
/// readable paragraph on standard error), 2 for bad arguments.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    lepus::telemetry::init(cli.log_format);
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
        eprintln!("lepus-scheduler: cannot start the async runtime");
        return ExitCode::FAILURE;
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lepus-scheduler: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let url = cli.amqp_url;
    match cli.command {
        Command::Run { schedules, group, heartbeat } => {
            let schedules = load_schedules(&schedules).map_err(|e| e.to_string())?;
            let config = SchedulerConfig { amqp_url: url, group, heartbeat, ..SchedulerConfig::default() };
            Scheduler::new(config, schedules).run(shutdown_signal()).await.map_err(|e| e.to_string())
        }
        Command::Check { schedules: path } => {
            let schedules = load_schedules(&path).map_err(|e| e.to_string())?;
            let now = Utc::now();
            for schedule in &schedules {
                let next: Vec<String> = schedule
                    .ticks(now, now + chrono::TimeDelta::days(3660), 3)
                    .iter()
                    .map(|t| t.to_rfc3339())
                    .collect();
                println!("{}\t{}\t{}\tnext: {}", schedule.name(), schedule.cron(), schedule.zone(), next.join(", "));
            }
            println!("{} schedule(s) OK in {}", schedules.len(), path.display());
            Ok(())
        }
        Command::Enqueue { job, send, delay, at } => {
            let mut request = send.request(&job, None)?;
            if let Some(delay) = delay {
                request = request.delay(delay);
            }
            if let Some(at) = at {
                request = request.at(at);
            }
            let client = connect(&url).await?;
            let id = client.enqueue(request).await.map_err(|e| e.to_string())?;
            println!("{id}");
            client.close().await.map_err(|e| e.to_string())
        }
        Command::Batch { job, items, send, callback, callback_kwargs } => {
            let items: Vec<Value> =
                serde_json::from_str(&items).map_err(|e| format!("--items must be a JSON array: {e}"))?;
            let mut batch = Batch::new();
            for item in items {
                batch = batch.job(send.request(&job, Some(item))?);
            }
            if let Some(callback) = callback {
                let kwargs: Map<String, Value> = serde_json::from_str(&callback_kwargs)
                    .map_err(|e| format!("--callback-kwargs must be a JSON object: {e}"))?;
                let arguments = Arguments { args: Vec::new(), kwargs };
                batch = batch.callback(Request::task(callback, arguments).queue(send.queue.as_str()));
            }
            let client = connect(&url).await?;
            let id = client.enqueue_batch(batch).await.map_err(|e| e.to_string())?;
            println!("{id}");
            client.close().await.map_err(|e| e.to_string())
        }
        Command::Progress { batch } => {
            let client = connect(&url).await?;
            let p = client.batch_progress(&BatchId::from(batch)).await.map_err(|e| e.to_string())?;
            println!(
                "total={} done={} failed={} pending={} complete={}",
                p.total, p.done, p.failed, p.pending, p.complete
            );
            for failed in &p.failed_jobs {
                println!("failed\t{failed}");
            }
            client.close().await.map_err(|e| e.to_string())
        }
    }
}

async fn connect(url: &str) -> Result<Client, String> {
    Client::connect(url).await.map_err(|e| format!("{e}\n\n{}", lepus::internal::UNREACHABLE_HINT))
}
