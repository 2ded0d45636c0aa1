//! The `lepus-worker` command line: flags, `LEPUS_*` variables and a settings file →
//! [`Settings`] → run. (Dead letters, like everything else an operator does, are `lepus`'s.)
//!
//! Binaries that register their own jobs reuse it: `lepus_worker::cli::main(|w| w.register(…))`.

use crate::{Worker, WorkerConfig, shutdown_signal};
use clap::Parser;
use lepus::internal::settings::{BROKER_KEYS, Effective, Flags, Key, Keys, Layers, SettingsError, TLS_KEYS};
use lepus::telemetry::LogFormat;
use std::process::ExitCode;

/// Runs Lepus jobs from RabbitMQ queues. Settings come from flags, `LEPUS_*` variables and a
/// settings file, in that order of precedence; `--print-config` shows the values in effect.
#[derive(Debug, Parser)]
#[command(name = "lepus-worker", version)]
pub struct Args {
    #[command(flatten)]
    settings: Flags<WorkerKeys>,
}

/// The settings of `lepus-worker`: its file keys, variables and flags.
#[derive(Debug)]
pub struct WorkerKeys;

impl Keys for WorkerKeys {
    const ALL: &'static [Key] = &[
        BROKER_KEYS[0],
        BROKER_KEYS[1],
        Key::new(
            "queues",
            "queue",
            "LEPUS_QUEUES",
            "QUEUE",
            "Queue to consume; repeat (or separate with commas) for several",
        )
        .many(),
        Key::new(
            "concurrency",
            "concurrency",
            "LEPUS_CONCURRENCY",
            "N",
            "Jobs run at once (and each queue's prefetch)",
        ),
        Key::new(
            "grace_period",
            "grace-period",
            "LEPUS_GRACE_PERIOD",
            "DURATION",
            "How long running jobs may take to finish after SIGTERM/SIGINT, e.g. `30s`, `2m`",
        ),
        Key::new(
            "delivery_limit",
            "delivery-limit",
            "LEPUS_DELIVERY_LIMIT",
            "N",
            "Times a message may be handed back (its worker died) before it is dead-lettered: the queues' x-delivery-limit",
        ),
        Key::new(
            "max_payload",
            "max-payload",
            "LEPUS_MAX_PAYLOAD",
            "BYTES",
            "Largest message body accepted; larger ones are dead-lettered",
        ),
        Key::new(
            "broker_timeout",
            "broker-timeout",
            "LEPUS_BROKER_TIMEOUT",
            "DURATION",
            "How long a publish or an ack may wait for the broker",
        ),
        Key::new(
            "slot_wait",
            "slot-wait",
            "LEPUS_SLOT_WAIT",
            "DURATION",
            "How long a job with a concurrency key waits for a slot before it goes back to its queue",
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
        Key::new(
            "name",
            "name",
            "LEPUS_NODE_NAME",
            "NAME",
            "The node name remote control and events know this worker by (%h: the host name; default lepus@<host>-<pid>)",
        ),
        Key::new("events", "events", "LEPUS_EVENTS", "BOOL", "Send Celery's monitoring events (like celery -E)")
            .switch("true"),
        Key::new(
            "remote_control",
            "without-remote-control",
            "LEPUS_REMOTE_CONTROL",
            "BOOL",
            "Do not answer remote-control commands (celery inspect/control, Flower, lepus status)",
        )
        .switch("false"),
        Key::new(
            "batch_retention",
            "batch-retention",
            "LEPUS_BATCH_RETENTION",
            "DURATION",
            "How long batch progress stays readable, e.g. `7d` (the stream lepus.batch.progress's x-max-age; the same on every worker)",
        ),
        Key::new(
            "event_log_max_age",
            "event-log-max-age",
            "LEPUS_EVENT_LOG_MAX_AGE",
            "DURATION",
            "How long the event stream lepus.events.log keeps events, e.g. `7d` (its x-max-age; the same in every process)",
        ),
        Key::new(
            "event_log_max_bytes",
            "event-log-max-bytes",
            "LEPUS_EVENT_LOG_MAX_BYTES",
            "BYTES",
            "How many bytes the event stream keeps at most (its x-max-length-bytes; the same in every process)",
        ),
        Key::new(
            "replay_from",
            "replay-from",
            "LEPUS_REPLAY_FROM",
            "first|TIME",
            "A new service first handles the event stream from its oldest event (`first`) or an RFC 3339 time, then goes live",
        ),
        Key::new(
            "priorities",
            "priorities",
            "LEPUS_PRIORITIES",
            "strict|weighted:H,N,L",
            "Consume each queue with its tiers <queue>.high and <queue>.low, starting jobs in strict order or by weights (e.g. weighted:6,3,1)",
        ),
        Key::new("log_format", "log-format", "LEPUS_LOG_FORMAT", "FORMAT", "Log format: `text` or `json`"),
    ];
}

/// The settings of a `lepus-worker` process.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settings {
    /// The worker's configuration.
    pub worker: WorkerConfig,
    /// How log lines look.
    pub log_format: LogFormat,
}

impl Args {
    /// The settings in effect, from defaults, the settings file, the environment and the flags,
    /// checked; or every problem found.
    pub fn settings(&self) -> Result<(Settings, Effective), SettingsError> {
        let mut layers = Layers::load(&self.settings);
        let d = WorkerConfig::default();
        let (amqp_url, amqp_url_order) = layers.broker(&d.amqp_url);
        let worker = WorkerConfig {
            amqp_url,
            amqp_url_order,
            queues: layers.get("queues", d.queues),
            concurrency: layers.get("concurrency", d.concurrency),
            grace_period: layers.get("grace_period", d.grace_period),
            delivery_limit: layers.get("delivery_limit", d.delivery_limit),
            max_payload: layers.get("max_payload", d.max_payload),
            broker_timeout: layers.get("broker_timeout", d.broker_timeout),
            metrics_addr: layers.optional("metrics_addr"),
            tls: layers.tls(),
            name: layers.optional("name"),
            events: layers.get("events", d.events),
            remote_control: layers.get("remote_control", d.remote_control),
            batch_retention: layers.get("batch_retention", d.batch_retention),
            event_log: lepus::EventLog {
                max_age: layers.get("event_log_max_age", d.event_log.max_age),
                max_bytes: layers.get("event_log_max_bytes", d.event_log.max_bytes),
            },
            replay_from: None,
            slot_wait: layers.get("slot_wait", d.slot_wait),
            priorities: None,
        };
        let replay_from = layers.optional::<String>("replay_from").and_then(|text| match text.parse() {
            Ok(from) => Some(from),
            Err(why) => {
                layers.problem(format!("replay_from: {why}"));
                None
            }
        });
        let priorities = layers.optional::<String>("priorities").and_then(|text| match text.parse() {
            Ok(order) => Some(order),
            Err(why) => {
                layers.problem(format!("priorities: {why}"));
                None
            }
        });
        let worker = WorkerConfig { replay_from, priorities, ..worker };
        let log_format = layers.get("log_format", LogFormat::default());
        for problem in worker.problems() {
            layers.problem(problem);
        }
        Ok((Settings { worker, log_format }, layers.finish()?))
    }
}

/// Parses the command line, sets up logging and runs a worker with the jobs `register` adds.
/// Exits 0 after a clean stop, 1 on failure (with one readable paragraph on standard error),
/// 2 for bad arguments or settings.
pub fn main(register: impl FnOnce(Worker) -> Worker) -> ExitCode {
    run(Args::parse(), register)
}

/// Like [`main`], with arguments already parsed. Bad settings exit 2, each problem named.
pub fn run(args: Args, register: impl FnOnce(Worker) -> Worker) -> ExitCode {
    let (settings, effective) = match args.settings() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("lepus-worker: {e}");
            return ExitCode::from(2);
        }
    };
    if args.settings.print_config() {
        print!("{effective}");
        return ExitCode::SUCCESS;
    }
    lepus::telemetry::init(settings.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("lepus-worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let worker = register(Worker::new(settings.worker));
    match runtime.block_on(worker.run(shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lepus-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
