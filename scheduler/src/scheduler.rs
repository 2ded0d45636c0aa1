//! [`Scheduler`]: stand by until this replica leads, then fire every schedule on time until the
//! lead is lost (stand by again) or the scheduler is told to stop.
//!
//! On taking the lead it reads each schedule's last fire time from the broker. Ticks after it
//! that are more than half a second old were missed (no replica ran): the schedule's misfire
//! policy decides, and the decision is logged. Each firing (the job, or a batch's snapshot and
//! jobs) and the new last fire time are published in one transaction.

use crate::config::SchedulerConfig;
use crate::leader::Leadership;
use crate::schedule::{Firing, MAX_CATCH_UP, Misfire, Schedule};
use crate::state;
use chrono::{DateTime, TimeDelta, Utc};
use lepus::internal::{Outgoing, Transaction, persistent_json, topology};
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// A tick this close to now is due, not missed.
const TOLERANCE: TimeDelta = TimeDelta::milliseconds(500);

/// How often a leader checks, while waiting for a tick, that it still leads.
const LEAD_CHECK: Duration = Duration::from_millis(250);

/// Why a scheduler could not run: its configuration is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// The scheduler group's name is not acceptable.
    #[error("invalid configuration: {0}")]
    Group(#[source] lepus::Error),
    /// The heartbeat is out of range.
    #[error("invalid configuration: the heartbeat must be between 1 s and 10 min, not {0:?}")]
    Heartbeat(Duration),
    /// A duration that must be positive is zero.
    #[error("invalid configuration: {0} must be more than zero")]
    Zero(&'static str),
    /// There is nothing to schedule.
    #[error("invalid configuration: no schedules to run")]
    NoSchedules,
}

/// Why a replica stopped leading (it stands by again and tries to lead once more).
#[derive(Debug, thiserror::Error)]
enum LeadEnded {
    /// The connection that held the lock died, and the lock with it.
    #[error("the connection holding the scheduler lock died")]
    LostLock,
    /// The broker refused or failed an operation of the leader.
    #[error(transparent)]
    Broker(#[from] lepus::Error),
}

/// A scheduler replica.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    schedules: Vec<Schedule>,
}

impl Scheduler {
    /// A replica that fires `schedules`.
    #[must_use]
    pub fn new(config: SchedulerConfig, schedules: Vec<Schedule>) -> Self {
        Self { config, schedules }
    }

    /// Runs until `shutdown` completes: stands by, leads when it can, releases the lead at the
    /// end. Broker trouble is retried, not returned.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), SchedulerError> {
        self.config.validate()?;
        if self.schedules.is_empty() {
            return Err(SchedulerError::NoSchedules);
        }
        let stop = lepus::internal::cancelled_by(shutdown);
        let name = format!("lepus-scheduler {}", lepus::internal::node_name());
        let group = self.config.group.as_str();
        tracing::info!(
            broker = lepus::internal::redact(&self.config.amqp_url),
            group,
            schedules = self.schedules.len(),
            "scheduler starting"
        );
        while let Some(leadership) = Leadership::acquire(&self.config, &name, &stop).await {
            match self.lead(&leadership, &stop).await {
                Ok(()) => {
                    leadership.release().await;
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "stopped leading; standing by"),
            }
        }
        tracing::info!("scheduler stopped");
        Ok(())
    }

    /// Fires schedules while this replica leads; `Ok` when told to stop.
    async fn lead(&self, leadership: &Leadership, stop: &CancellationToken) -> Result<(), LeadEnded> {
        let reader = leadership.channel().await?;
        let tx = Transaction::open(leadership.channel().await?, self.config.broker_timeout).await?;
        let due_from = Utc::now() - TOLERANCE;
        let mut next = Vec::with_capacity(self.schedules.len());
        for schedule in &self.schedules {
            let last = state::last_fired(&reader, &self.config.group, schedule.name()).await?;
            if let Some(last) = last {
                self.catch_up(&tx, &reader, schedule, last, due_from).await?;
            }
            let from = last.map_or(due_from, |last| last.max(due_from));
            next.push(schedule.next_after(from));
        }
        loop {
            let Some((index, tick)) =
                next.iter().enumerate().filter_map(|(i, t)| t.map(|t| (i, t))).min_by_key(|(_, t)| *t)
            else {
                tracing::info!("no schedule has a tick left");
                stop.cancelled().await;
                return Ok(());
            };
            while let Ok(wait) = (tick - Utc::now()).to_std() {
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(wait.min(LEAD_CHECK)) => {}
                }
                if !leadership.held() {
                    return Err(LeadEnded::LostLock);
                }
            }
            let schedule = &self.schedules[index];
            self.fire(&tx, &reader, schedule, tick).await?;
            next[index] = schedule.next_after(tick);
        }
    }

    /// Applies the misfire policy to the ticks after `last` that are already past.
    async fn catch_up(
        &self,
        tx: &Transaction,
        reader: &lepus::lapin::Channel,
        schedule: &Schedule,
        last: DateTime<Utc>,
        due_from: DateTime<Utc>,
    ) -> lepus::Result<()> {
        let Some(latest) = schedule.last_until(due_from).filter(|latest| *latest > last) else { return Ok(()) };
        let name = schedule.name();
        match schedule.misfire_policy() {
            Misfire::Skip => {
                let missed = schedule.ticks(last, due_from, MAX_CATCH_UP).len();
                tracing::info!(schedule = name, missed, %last, "misfire: skipping the missed ticks (policy skip)");
            }
            Misfire::Once => {
                tracing::info!(schedule = name, %latest, %last, "misfire: one catch-up for the latest missed tick (policy once)");
                self.fire(tx, reader, schedule, latest).await?;
            }
            Misfire::All => {
                let missed = schedule.ticks(last, due_from, MAX_CATCH_UP);
                if missed.len() == MAX_CATCH_UP && missed.last().is_some_and(|t| *t < latest) {
                    tracing::warn!(
                        schedule = name,
                        limit = MAX_CATCH_UP,
                        "misfire: more ticks were missed than the catch-up limit; running the first ones"
                    );
                }
                tracing::info!(schedule = name, missed = missed.len(), %last, "misfire: running every missed tick (policy all)");
                for tick in missed {
                    self.fire(tx, reader, schedule, tick).await?;
                }
            }
        }
        Ok(())
    }

    /// Publishes one firing and the schedule's new last fire time, in one transaction.
    async fn fire(
        &self,
        tx: &Transaction,
        reader: &lepus::lapin::Channel,
        schedule: &Schedule,
        tick: DateTime<Utc>,
    ) -> lepus::Result<()> {
        let id = schedule.firing_id(tick);
        let span = tracing::info_span!("firing", schedule = schedule.name(), job.id = %id);
        async {
            match schedule.firing(tick) {
                Ok(Firing::Job { queue, message }) => {
                    let (body, properties) = encode(&message)?;
                    tx.publish(Outgoing { exchange: "", routing_key: &queue, body: &body, properties }).await?;
                }
                Ok(Firing::Batch(batch)) => {
                    topology::declare_batch_progress(reader, &batch.id).await?;
                    let progress = topology::batch_progress_queue(&batch.id);
                    let snapshot = batch.snapshot.encode()?;
                    tx.publish(Outgoing { exchange: "", routing_key: &progress, body: &snapshot, properties: persistent_json() }).await?;
                    for (queue, message) in &batch.messages {
                        let (body, properties) = encode(message)?;
                        tx.publish(Outgoing { exchange: "", routing_key: queue, body: &body, properties }).await?;
                    }
                }
                Err(e) => tracing::error!(error = %e, "the schedule produced no valid job; tick skipped"),
            }
            state::record(tx, &self.config.group, schedule.name(), tick).await?;
            let unroutable = tx.commit().await?;
            if unroutable.is_empty() {
                tracing::info!(%tick, "fired");
            } else {
                tracing::error!(%tick, queues = ?unroutable, "fired, but no queue of that name exists: the job was dropped; start a worker on it");
            }
            Ok(())
        }
        .instrument(span)
        .await
    }
}

fn encode(message: &lepus::protocol::TaskMessage) -> lepus::Result<(Vec<u8>, lepus::lapin::BasicProperties)> {
    message.encode().map_err(|source| lepus::Error::Serde {
        action: "encode",
        what: format!("job {}", message.task),
        source,
    })
}
