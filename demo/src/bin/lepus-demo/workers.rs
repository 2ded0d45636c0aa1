//! The worker processes: copies of this executable in the worker role, consuming the demo queue
//! (see [`crate::children`] for how they are started and stopped).

use crate::children::{Children, Spawn, Stopped};
use crate::record::RECORDS_VARIABLE;
use crate::roles::Role;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// How long a worker may run its jobs after SIGTERM, and how much longer the demo waits for it.
const GRACE_PERIOD: &str = "10s";
const STOP_PATIENCE: Duration = Duration::from_secs(15);

/// What every worker process is told.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSettings {
    pub(crate) amqp_url: String,
    pub(crate) queue: String,
    pub(crate) concurrency: u16,
    pub(crate) delivery_limit: u32,
}

/// The running worker processes.
#[derive(Debug)]
pub(crate) struct Workers {
    children: Children,
    dir: std::path::PathBuf,
}

impl Workers {
    /// No workers yet; they log to, and record `demo.record` runs in, `dir`.
    pub(crate) fn new(dir: &Path) -> Self {
        Self { children: Children::new(Role::Worker, dir, STOP_PATIENCE), dir: dir.to_owned() }
    }

    /// Starts `count` worker processes.
    pub(crate) fn start(&mut self, count: u16, settings: &WorkerSettings) -> anyhow::Result<()> {
        for _ in 0..count {
            self.children.spawn(Spawn {
                amqp_url: &settings.amqp_url,
                args: vec![
                    "--queue".into(),
                    settings.queue.clone(),
                    "--concurrency".into(),
                    settings.concurrency.to_string(),
                    "--delivery-limit".into(),
                    settings.delivery_limit.to_string(),
                    "--grace-period".into(),
                    GRACE_PERIOD.into(),
                ],
                env: vec![(RECORDS_VARIABLE, self.dir.as_os_str())],
            })?;
        }
        Ok(())
    }

    pub(crate) fn count(&self) -> usize {
        self.children.count()
    }

    /// Describes the first worker that has ended, with the end of its log.
    pub(crate) fn ended(&mut self) -> Option<String> {
        self.children.ended()
    }

    /// Whether every worker has ended.
    pub(crate) fn all_ended(&mut self) -> bool {
        self.children.all_ended()
    }

    /// Jobs run by each worker process (`worker N (pid P)`, including those that ran none), from
    /// counts by the results' `worker` field (`host:pid`); unknown senders are listed as named.
    pub(crate) fn jobs_per_worker(&self, by_node: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
        let mut rows: Vec<(String, u64)> = self.children.iter().map(|p| (p.label().to_owned(), 0)).collect();
        for (node, &jobs) in by_node {
            let pid = node.rsplit_once(':').and_then(|(_, pid)| pid.parse::<u32>().ok());
            match self.children.iter().position(|p| Some(p.pid()) == pid) {
                Some(index) => rows[index].1 += jobs,
                None => rows.push((node.clone(), jobs)),
            }
        }
        rows
    }

    /// Sends SIGTERM to every worker, waits for each to exit (killing any that outlives its grace
    /// period) and says how each ended.
    pub(crate) async fn stop(&mut self) -> Vec<Stopped> {
        self.children.stop().await
    }
}
