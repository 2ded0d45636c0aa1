//! What the schedulers fired, counted once they have stopped: each schedule's firings (the runs of
//! `demo.record` written down by the workers, and the scheduled batches' progress queues), the
//! ticks missed in between, and how many times each batch callback ran. It waits until the workers
//! have run everything that was fired, or until a deadline.

use crate::record;
use crate::schedule_file::DemoSchedules;
use chrono::{DateTime, TimeDelta, Utc};
use lepus::{BatchId, BatchProgress, Client};
use lepus_scheduler::Schedule;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the records and batches are looked at again while waiting.
const POLL: Duration = Duration::from_millis(200);

/// The time the schedulers ran, widened by a second on each side: every tick they can have fired
/// is in it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) from: DateTime<Utc>,
    pub(crate) until: DateTime<Utc>,
}

impl Window {
    /// From `started` to `stopped`, widened.
    pub(crate) fn new(started: DateTime<Utc>, stopped: DateTime<Utc>) -> Self {
        Self { from: started - TimeDelta::seconds(1), until: stopped + TimeDelta::seconds(1) }
    }

    /// The firing ids of `schedule`'s ticks in the window, oldest first.
    pub(crate) fn firing_ids(&self, schedule: &Schedule) -> Vec<String> {
        schedule.ticks(self.from, self.until, 100_000).into_iter().map(|tick| schedule.firing_id(tick)).collect()
    }
}

/// One firing.
#[derive(Debug)]
pub(crate) struct Fired {
    /// `<schedule>@<tick UTC>`.
    pub(crate) id: String,
    /// How many times it ran: the job itself, or the callback of its batch.
    pub(crate) runs: u32,
    /// A batch firing's progress.
    pub(crate) batch: Option<BatchProgress>,
}

/// One schedule's firings.
#[derive(Debug)]
pub(crate) struct ScheduleFirings {
    pub(crate) fired: Vec<Fired>,
    /// Ticks between the first firing and the last one that did not fire or did not run.
    pub(crate) missed: Vec<String>,
}

/// Everything counted.
#[derive(Debug)]
pub(crate) struct Firings {
    pub(crate) pulse: ScheduleFirings,
    pub(crate) fanout: ScheduleFirings,
    /// How many times the client batch's callback ran.
    pub(crate) client_callback_runs: u32,
    /// Whether everything fired had run when the counting ended.
    pub(crate) settled: bool,
}

/// What is looked up.
#[derive(Debug)]
pub(crate) struct Lookup<'a> {
    pub(crate) client: &'a Client,
    pub(crate) dir: &'a Path,
    pub(crate) schedules: &'a DemoSchedules,
    pub(crate) group: &'a str,
    pub(crate) window: Window,
    pub(crate) client_batch: Option<&'a BatchId>,
}

impl Lookup<'_> {
    /// Counts once the workers have run everything fired, or at `patience`'s end, or when the
    /// demo is interrupted.
    pub(crate) async fn count(&self, patience: Duration, interrupted: &CancellationToken) -> anyhow::Result<Firings> {
        let started = Instant::now();
        let channel = self.client.broker().channel().await?;
        let pulse_last = lepus_scheduler::last_fired(&channel, self.group, self.schedules.pulse.name()).await?;
        drop(channel.close(200, "read".into()).await);
        // Which ticks of the batch schedule fired: those whose batch progress queue exists.
        let mut batches = Vec::new();
        for id in self.window.firing_ids(&self.schedules.fanout) {
            if let Ok(progress) = self.client.batch_progress(&BatchId::from(id.as_str())).await {
                batches.push((id, progress));
            }
        }
        loop {
            let runs = record::read(self.dir)?;
            let pulse = self.pulse(&runs, pulse_last);
            for (id, progress) in &mut batches {
                if !progress.complete {
                    *progress = self.client.batch_progress(&BatchId::from(id.as_str())).await?;
                }
            }
            let fanout = self.fanout(&runs, &batches);
            let client_callback_runs = self.client_batch.map_or(0, |id| runs_of(&runs, &callback_id(id.as_str())));
            let settled = pulse.missed.is_empty()
                && fanout.missed.is_empty()
                && fanout.fired.iter().all(|f| f.runs > 0 && f.batch.as_ref().is_some_and(|b| b.complete))
                && (self.client_batch.is_none() || client_callback_runs > 0);
            if settled || started.elapsed() > patience || interrupted.is_cancelled() {
                return Ok(Firings { pulse, fanout, client_callback_runs, settled });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The pulse's firings: its runs written down; missed are the ticks from the first run to its
    /// last fire time (read from the broker) that did not run.
    fn pulse(&self, runs: &BTreeMap<String, u32>, last: Option<DateTime<Utc>>) -> ScheduleFirings {
        let schedule = &self.schedules.pulse;
        let prefix = format!("{}@", schedule.name());
        let fired: Vec<Fired> = runs
            .range(prefix.clone()..)
            .take_while(|(id, _)| id.starts_with(&prefix))
            .map(|(id, &runs)| Fired { id: id.clone(), runs, batch: None })
            .collect();
        let last = last.map(|tick| schedule.firing_id(tick));
        let ticks = self.window.firing_ids(schedule);
        let first = fired.first().map(|f| f.id.as_str());
        let missed = match (first, last) {
            (Some(first), Some(last)) => {
                ticks.into_iter().filter(|id| id.as_str() >= first && *id <= last && !runs.contains_key(id)).collect()
            }
            (None, Some(last)) => vec![last],
            (_, None) => Vec::new(),
        };
        ScheduleFirings { fired, missed }
    }

    /// The batch schedule's firings: the batches found, and how many times each callback ran;
    /// missed are the ticks between the first batch and the last that have none.
    fn fanout(&self, runs: &BTreeMap<String, u32>, batches: &[(String, BatchProgress)]) -> ScheduleFirings {
        let fired: Vec<Fired> = batches
            .iter()
            .map(|(id, progress)| Fired {
                id: id.clone(),
                runs: runs_of(runs, &callback_id(id)),
                batch: Some(progress.clone()),
            })
            .collect();
        let missed = match (fired.first(), fired.last()) {
            (Some(first), Some(last)) => self
                .window
                .firing_ids(&self.schedules.fanout)
                .into_iter()
                .filter(|id| *id >= first.id && *id <= last.id && !batches.iter().any(|(b, _)| b == id))
                .collect(),
            _ => Vec::new(),
        };
        ScheduleFirings { fired, missed }
    }
}

/// The job id of batch `batch`'s callback.
pub(crate) fn callback_id(batch: &str) -> String {
    format!("{batch}.callback")
}

fn runs_of(runs: &BTreeMap<String, u32>, id: &str) -> u32 {
    runs.get(id).copied().unwrap_or_default()
}
