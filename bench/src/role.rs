//! The hidden worker roles. The orchestrator starts each worker by re-executing this binary with
//! `LEPUS_BENCH_ROLE` set (`lepus-worker` or `raw-worker`); the other `LEPUS_BENCH_*` variables
//! say which queue to consume, how many jobs at once, and at which counts of settled deliveries
//! to report (see [`crate::watcher`]). The broker URL travels in the environment, not on the
//! command line, so that its password stays out of the process list.

use std::fmt;
use std::process::Command;

const ROLE: &str = "LEPUS_BENCH_ROLE";
const URL: &str = "LEPUS_BENCH_AMQP_URL";
const QUEUE: &str = "LEPUS_BENCH_QUEUE";
const CONCURRENCY: &str = "LEPUS_BENCH_CONCURRENCY";
const TARGETS: &str = "LEPUS_BENCH_TARGETS";
const CELERY_WIRE: &str = "LEPUS_BENCH_CELERY_WIRE";
const METRICS_ADDR: &str = "LEPUS_BENCH_METRICS_ADDR";
const EVENTS: &str = "LEPUS_BENCH_EVENTS";
const SERVICE: &str = "LEPUS_BENCH_SERVICE";

/// The two sides of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Plain lapin, no framework: the ceiling.
    Raw,
    /// Lepus: `lepus::Client` and the stock Lepus worker.
    Lepus,
}

impl Side {
    /// The role name a worker of this side runs under.
    fn role(self) -> &'static str {
        match self {
            Side::Raw => "raw-worker",
            Side::Lepus => "lepus-worker",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Raw => "raw lapin",
            Side::Lepus => "Lepus",
        })
    }
}

/// A feature whose cost a run measures (`--metrics`, `--events`): Lepus with it against Lepus
/// without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feature {
    /// The worker serves `/metrics`.
    Metrics,
    /// The worker sends Celery's events (a monitor consumes them).
    Events,
}

/// One contender of a comparison: which side's code runs, and with which feature on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Contender {
    pub(crate) side: Side,
    pub(crate) feature: Option<Feature>,
}

impl Contender {
    /// The baseline and the contender measured against it: raw lapin and Lepus, or, to price a
    /// feature, Lepus without it and Lepus with it.
    pub(crate) fn pair(feature: Option<Feature>) -> [Self; 2] {
        match feature {
            Some(feature) => {
                [Self { side: Side::Lepus, feature: None }, Self { side: Side::Lepus, feature: Some(feature) }]
            }
            None => [Self { side: Side::Raw, feature: None }, Self { side: Side::Lepus, feature: None }],
        }
    }

    /// A short name for queue names and file names.
    pub(crate) fn tag(self) -> &'static str {
        match (self.side, self.feature) {
            (Side::Raw, _) => "raw",
            (Side::Lepus, None) => "lepus",
            (Side::Lepus, Some(Feature::Metrics)) => "lepus-metrics",
            (Side::Lepus, Some(Feature::Events)) => "lepus-events",
        }
    }
}

impl fmt::Display for Contender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.side, self.feature) {
            (Side::Raw, _) => "raw lapin",
            (Side::Lepus, None) => "Lepus",
            (Side::Lepus, Some(Feature::Metrics)) => "Lepus, metrics on",
            (Side::Lepus, Some(Feature::Events)) => "Lepus, events on",
        })
    }
}

/// What a worker process is told.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSpec {
    pub(crate) side: Side,
    pub(crate) amqp_url: String,
    pub(crate) queue: String,
    pub(crate) concurrency: u16,
    /// Counts of settled deliveries to report the moment they are reached.
    pub(crate) targets: Vec<u64>,
    /// The raw worker answers with a Celery result message like Lepus's (`--raw-headers`).
    pub(crate) celery_wire: bool,
    /// Where the Lepus worker serves its metrics, if it does.
    pub(crate) metrics_addr: Option<String>,
    /// The Lepus worker sends events.
    pub(crate) events: bool,
    /// The Lepus worker is this data-event service instead of a worker on `queue`
    /// (`--fanout`, see [`crate::lepus_service_role`]); the raw worker consumes `queue` either way.
    pub(crate) service: Option<String>,
}

impl WorkerSpec {
    /// A stock Lepus worker on `queue`, `concurrency` jobs at once, with nothing extra on and no
    /// count to report at once.
    pub(crate) fn lepus(amqp_url: &str, queue: &str, concurrency: u16) -> Self {
        Self {
            side: Side::Lepus,
            amqp_url: amqp_url.to_owned(),
            queue: queue.to_owned(),
            concurrency,
            targets: Vec::new(),
            celery_wire: false,
            metrics_addr: None,
            events: false,
            service: None,
        }
    }

    /// The command that starts this worker: this very binary, in the worker's role.
    pub(crate) fn command(&self) -> std::io::Result<Command> {
        let mut command = Command::new(std::env::current_exe()?);
        let targets: Vec<String> = self.targets.iter().map(u64::to_string).collect();
        command
            .env(ROLE, self.side.role())
            .env(URL, &self.amqp_url)
            .env(QUEUE, &self.queue)
            .env(CONCURRENCY, self.concurrency.to_string())
            .env(TARGETS, targets.join(","))
            .env(CELERY_WIRE, if self.celery_wire { "1" } else { "0" })
            .env(METRICS_ADDR, self.metrics_addr.as_deref().unwrap_or_default())
            .env(EVENTS, if self.events { "1" } else { "0" })
            .env(SERVICE, self.service.as_deref().unwrap_or_default())
            // Both workers log as a deployed Lepus worker does by default.
            .env("RUST_LOG", "info");
        Ok(command)
    }
}

/// The worker this process is asked to be, if any; `Err` for a malformed environment.
pub(crate) fn from_env() -> Option<Result<WorkerSpec, String>> {
    let role = std::env::var(ROLE).ok()?;
    Some(parse(&role))
}

fn parse(role: &str) -> Result<WorkerSpec, String> {
    let side = match role {
        "raw-worker" => Side::Raw,
        "lepus-worker" => Side::Lepus,
        other => return Err(format!("unknown {ROLE} {other:?}: expected raw-worker or lepus-worker")),
    };
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let concurrency = var(CONCURRENCY)?.parse().map_err(|e| format!("{CONCURRENCY}: {e}"))?;
    let targets = var(TARGETS)?
        .split(',')
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().map_err(|e| format!("{TARGETS}: {e}")))
        .collect::<Result<_, _>>()?;
    let celery_wire = var(CELERY_WIRE).is_ok_and(|v| v == "1");
    let metrics_addr = var(METRICS_ADDR).ok().filter(|addr| !addr.is_empty());
    let events = var(EVENTS).is_ok_and(|v| v == "1");
    let service = var(SERVICE).ok().filter(|service| !service.is_empty());
    let (amqp_url, queue) = (var(URL)?, var(QUEUE)?);
    Ok(WorkerSpec { side, amqp_url, queue, concurrency, targets, celery_wire, metrics_addr, events, service })
}
