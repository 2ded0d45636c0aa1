//! The scheduler replicas: copies of this executable in the scheduler role, each running
//! `lepus-scheduler run` on the demo's schedule file in a scheduler group of the demo's own (see
//! [`crate::children`] for how they are started and stopped). Which one leads is read from their
//! logs: the lead is an exclusive queue, and RabbitMQ does not tell other connections who holds it.

use crate::children::{Children, Spawn, Stopped};
use crate::roles::Role;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The heartbeat of a replica's connection: a silent leader is replaced within about two.
const HEARTBEAT: &str = "2s";
/// How long a replica may take to release the lead and exit after SIGTERM.
const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// What the scheduler logs when a replica takes the lead, and when it finds another one leading
/// (`scheduler/src/scheduler.rs`, `scheduler/src/leader.rs`).
const LEADS: &str = "this replica now leads";
const STANDS_BY: &str = "another replica leads; standing by";

/// What every replica is told.
#[derive(Debug, Clone)]
pub(crate) struct SchedulerSettings {
    pub(crate) amqp_url: String,
    pub(crate) schedules: PathBuf,
    pub(crate) group: String,
}

/// What one replica has done so far, from its log.
#[derive(Debug, Clone)]
pub(crate) struct Replica {
    pub(crate) label: String,
    pub(crate) led: bool,
    pub(crate) stood_by: bool,
}

/// The running replicas.
#[derive(Debug)]
pub(crate) struct Schedulers {
    children: Children,
}

impl Schedulers {
    /// No replicas yet; they log to `dir`.
    pub(crate) fn new(dir: &Path) -> Self {
        Self { children: Children::new(Role::Scheduler, dir, STOP_PATIENCE) }
    }

    /// Starts `count` replicas.
    pub(crate) fn start(&mut self, count: u16, settings: &SchedulerSettings) -> anyhow::Result<()> {
        for _ in 0..count {
            self.children.spawn(Spawn {
                amqp_url: &settings.amqp_url,
                args: vec![
                    "run".into(),
                    "--schedules".into(),
                    settings.schedules.display().to_string(),
                    "--group".into(),
                    settings.group.clone(),
                    "--heartbeat".into(),
                    HEARTBEAT.into(),
                ],
                env: Vec::new(),
            })?;
        }
        Ok(())
    }

    pub(crate) fn count(&self) -> usize {
        self.children.count()
    }

    /// Whether the replicas have been stopped.
    pub(crate) fn is_stopped(&self) -> bool {
        self.children.is_stopped()
    }

    /// Describes the first replica that has ended, with the end of its log.
    pub(crate) fn ended(&mut self) -> Option<String> {
        self.children.ended()
    }

    /// What each replica has done so far: led, stood by, or both (it took over).
    pub(crate) fn replicas(&self) -> Vec<Replica> {
        self.children
            .iter()
            .map(|p| {
                let log = std::fs::read_to_string(p.log()).unwrap_or_default();
                Replica { label: p.label().to_owned(), led: log.contains(LEADS), stood_by: log.contains(STANDS_BY) }
            })
            .collect()
    }

    /// Sends SIGTERM to every replica (the leader releases the lead), waits for each to exit and
    /// says how each ended.
    pub(crate) async fn stop(&mut self) -> Vec<Stopped> {
        self.children.stop().await
    }
}
