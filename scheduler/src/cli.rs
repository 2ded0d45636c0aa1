//! The `lepus-scheduler` command line: run a replica, or check a schedule file. (Sending jobs and
//! batches, like everything else an operator does, is `lepus`'s.)

use crate::{Schedule, Scheduler, SchedulerConfig, load_schedules};
use chrono::Utc;
use clap::{Parser, Subcommand};
use lepus::internal::settings::{BROKER_KEYS, Effective, Flags, Key, Keys, Layers, SettingsError, TLS_KEYS};
use lepus::shutdown_signal;
use lepus::telemetry::LogFormat;
use std::path::PathBuf;
use std::process::ExitCode;

/// Periodic jobs and batches for Lepus workers.
#[derive(Debug, Parser)]
#[command(name = "lepus-scheduler", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scheduler replica: any number may run; one leads, the others stand by. Settings come
    /// from flags, `LEPUS_*` variables and a settings file, in that order of precedence.
    Run {
        #[command(flatten)]
        settings: Flags<SchedulerKeys>,
    },
    #[command(flatten)]
    OneOff(OneOff),
}

/// The commands that do one thing and exit.
#[derive(Debug, Subcommand)]
enum OneOff {
    /// Check a schedule file and show each schedule's next ticks.
    Check {
        /// The schedule file (TOML).
        #[arg(long, env = "LEPUS_SCHEDULES", default_value = "schedules.toml")]
        schedules: PathBuf,
    },
}

/// The settings of `lepus-scheduler run`: its file keys, variables and flags.
#[derive(Debug)]
pub struct SchedulerKeys;

impl Keys for SchedulerKeys {
    const ALL: &'static [Key] = &[
        BROKER_KEYS[0],
        BROKER_KEYS[1],
        Key::new("schedules", "schedules", "LEPUS_SCHEDULES", "FILE", "The schedule file (TOML)"),
        Key::new(
            "group",
            "group",
            "LEPUS_SCHEDULER_GROUP",
            "NAME",
            "The scheduler group: replicas of one group share the lead; other groups run apart",
        ),
        Key::new(
            "heartbeat",
            "heartbeat",
            "LEPUS_HEARTBEAT",
            "DURATION",
            "Heartbeat of the leader's connection, e.g. `5s`: a silent leader is replaced within about two heartbeats",
        ),
        Key::new(
            "broker_timeout",
            "broker-timeout",
            "LEPUS_BROKER_TIMEOUT",
            "DURATION",
            "How long one broker call may take",
        ),
        Key::new(
            "metrics_addr",
            "metrics-addr",
            "LEPUS_METRICS_ADDR",
            "HOST:PORT",
            "Serve /metrics, /livez and /readyz over HTTP here (default: off)",
        ),
        TLS_KEYS[0],
        TLS_KEYS[1],
        TLS_KEYS[2],
        Key::new("log_format", "log-format", "LEPUS_LOG_FORMAT", "FORMAT", "Log format: `text` or `json`"),
    ];
}

/// The settings of a `lepus-scheduler run` process, checked, with its schedules loaded.
struct Settings {
    config: SchedulerConfig,
    schedules: Vec<Schedule>,
    log_format: LogFormat,
}

impl Settings {
    /// The settings in effect and the schedules of the schedule file; or every problem found.
    fn load(flags: &Flags<SchedulerKeys>) -> Result<(Self, Effective), SettingsError> {
        let mut layers = Layers::load(flags);
        let d = SchedulerConfig::default();
        let (amqp_url, amqp_url_order) = layers.broker(&d.amqp_url);
        let config = SchedulerConfig {
            amqp_url,
            amqp_url_order,
            group: layers.get("group", d.group),
            heartbeat: layers.get("heartbeat", d.heartbeat),
            broker_timeout: layers.get("broker_timeout", d.broker_timeout),
            metrics_addr: layers.optional("metrics_addr"),
            tls: layers.tls(),
            ..d
        };
        let path = layers.get("schedules", PathBuf::from("schedules.toml"));
        let log_format = layers.get("log_format", LogFormat::default());
        for problem in config.problems() {
            layers.problem(problem);
        }
        let schedules = match load_schedules(&path) {
            Ok(schedules) => schedules,
            Err(e) => {
                e.problems.iter().for_each(|problem| layers.problem(format!("schedules: {problem} (in {})", e.source)));
                Vec::new()
            }
        };
        let effective = layers.finish()?;
        Ok((Self { config, schedules, log_format }, effective))
    }
}

/// Parses the command line and runs the command. Exits 0 on success, 1 on failure (one
/// readable paragraph on standard error), 2 for bad arguments or settings.
#[must_use]
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run { settings } => replica(&settings),
        Command::OneOff(command) => execute(LogFormat::Text, one_off(command)),
    }
}

/// Runs a scheduler replica with the settings `flags` lead to, or prints them.
fn replica(flags: &Flags<SchedulerKeys>) -> ExitCode {
    let (settings, effective) = match Settings::load(flags) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("lepus-scheduler: {e}");
            return ExitCode::from(2);
        }
    };
    if flags.print_config() {
        print!("{effective}");
        return ExitCode::SUCCESS;
    }
    let Settings { config, schedules, log_format } = settings;
    execute(log_format, async move {
        Scheduler::new(config, schedules).run(shutdown_signal()).await.map_err(|e| e.to_string())
    })
}

/// Sets up logging and runs `command` on a runtime of its own.
fn execute(log_format: LogFormat, command: impl Future<Output = Result<(), String>>) -> ExitCode {
    lepus::telemetry::init(log_format);
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
        eprintln!("lepus-scheduler: cannot start the async runtime");
        return ExitCode::FAILURE;
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lepus-scheduler: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn one_off(command: OneOff) -> Result<(), String> {
    match command {
        OneOff::Check { schedules: path } => {
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
    }
}
