//! The `lepus-worker` command line: flags and `LEPUS_*` variables → [`WorkerConfig`] → run; and
//! `lepus-worker dead-letters …` to list, requeue and purge a queue's dead letters.
//!
//! Binaries that register their own jobs reuse it: `lepus_worker::cli::main(|w| w.register(…))`.

use crate::{Worker, WorkerConfig, shutdown_signal};
use clap::{Parser, Subcommand};
use lepus::telemetry::LogFormat;
use lepus::{Client, JobId};
use std::process::ExitCode;
use std::time::Duration;

/// Runs Lepus jobs from RabbitMQ queues, or acts on a queue's dead letters.
#[derive(Debug, Parser)]
#[command(name = "lepus-worker", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    worker: Args,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List, requeue or purge the dead letters of a queue.
    DeadLetters {
        /// Broker URL.
        #[arg(long, env = "LEPUS_AMQP_URL", default_value = lepus::DEFAULT_AMQP_URL, hide_env_values = true, hide_default_value = true)]
        amqp_url: String,
        /// The work queue whose dead letters to act on.
        #[arg(long, default_value = lepus::DEFAULT_QUEUE)]
        queue: String,
        #[command(subcommand)]
        action: DeadLetterAction,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLetterAction {
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

/// Runs Lepus jobs from RabbitMQ queues.
#[derive(Debug, Parser)]
#[command(name = "lepus-worker", version)]
pub struct Args {
    /// Broker URL.
    #[arg(long, env = "LEPUS_AMQP_URL", default_value = lepus::DEFAULT_AMQP_URL, hide_env_values = true, hide_default_value = true)]
    pub amqp_url: String,
    /// Queue to consume; repeat the flag (or separate with commas in LEPUS_QUEUES) for several.
    #[arg(long = "queue", env = "LEPUS_QUEUES", value_delimiter = ',', default_value = lepus::DEFAULT_QUEUE)]
    pub queues: Vec<String>,
    /// Jobs run at once (and each queue's prefetch).
    #[arg(long, env = "LEPUS_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// How long running jobs may take to finish after SIGTERM/SIGINT, e.g. `30s`, `2m`.
    #[arg(long, env = "LEPUS_GRACE_PERIOD", default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace_period: Duration,
    /// Times a message may be handed back (its worker died or lost its connection) before it is
    /// dead-lettered instead of run again: the queues' x-delivery-limit.
    #[arg(long, env = "LEPUS_DELIVERY_LIMIT", default_value_t = lepus::DEFAULT_DELIVERY_LIMIT)]
    pub delivery_limit: u32,
    /// Largest message body accepted, in bytes; larger ones are dead-lettered.
    #[arg(long, env = "LEPUS_MAX_PAYLOAD", default_value_t = 16 * 1024 * 1024)]
    pub max_payload: usize,
    /// Log format: `text` or `json`.
    #[arg(long, env = "LEPUS_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

impl Args {
    /// The worker configuration these arguments describe.
    #[must_use]
    pub fn config(&self) -> WorkerConfig {
        WorkerConfig {
            amqp_url: self.amqp_url.clone(),
            queues: self.queues.clone(),
            concurrency: self.concurrency,
            grace_period: self.grace_period,
            delivery_limit: self.delivery_limit,
            max_payload: self.max_payload,
            ..WorkerConfig::default()
        }
    }
}

/// Parses the command line, sets up logging and runs a worker with the jobs `register` adds.
/// Exits 0 after a clean stop, 1 on failure (with one readable paragraph on standard error),
/// 2 for bad arguments.
pub fn main(register: impl FnOnce(Worker) -> Worker) -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run(cli.worker, register),
        Some(Command::DeadLetters { amqp_url, queue, action }) => dead_letters(&amqp_url, &queue, action),
    }
}

/// Runs a dead-letter command; prints one line per dead letter or a count.
fn dead_letters(amqp_url: &str, queue: &str, action: DeadLetterAction) -> ExitCode {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        eprintln!("lepus-worker: cannot start the async runtime");
        return ExitCode::FAILURE;
    };
    let done = runtime.block_on(async {
        let client = Client::connect(amqp_url).await?;
        let letters = client.dead_letters(queue)?;
        match action {
            DeadLetterAction::List { limit } => {
                for letter in letters.list(limit).await? {
                    let id = letter.id.as_ref().map_or("-", JobId::as_str).to_owned();
                    let attempts = letter.attempts.map_or_else(|| "-".to_owned(), |a| a.to_string());
                    let error = letter.error.unwrap_or_default();
                    println!(
                        "{id}\t{}\t{}\tattempts={attempts}\t{error}",
                        letter.task.unwrap_or_default(),
                        letter.reason
                    );
                }
            }
            DeadLetterAction::Requeue { id: Some(id), .. } => {
                if !letters.requeue(&JobId::from(id.as_str())).await? {
                    client.close().await?;
                    return Ok(false);
                }
                println!("requeued {id} to {queue}");
            }
            DeadLetterAction::Requeue { id: None, .. } => {
                println!("requeued {} to {queue}", letters.requeue_all().await?)
            }
            DeadLetterAction::Purge => println!("purged {}", letters.purge().await?),
        }
        client.close().await.map(|()| true)
    });
    match done {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("lepus-worker: no dead letter of {queue} has that job id");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("lepus-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Like [`main`], with arguments already parsed.
pub fn run(args: Args, register: impl FnOnce(Worker) -> Worker) -> ExitCode {
    lepus::telemetry::init(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("lepus-worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let worker = register(Worker::new(args.config()));
    match runtime.block_on(worker.run(shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lepus-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
