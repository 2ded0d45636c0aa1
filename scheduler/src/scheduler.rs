//! [`Scheduler`]: stand by until this replica leads, then fire every schedule on time until the
//! lead is lost (stand by again) or the scheduler is told to stop.
//!
//! On taking the lead it reads each schedule's last fire time from the broker (on a connection of its
//! own: see `state::read_all`); what each schedule
//! owes from then on is its [`Agenda`] (missed ticks by the misfire policy, then the regular
//! ones; the decision is logged). Each firing (the job, or a batch's jobs) and the new last fire
//! time are published in one transaction; a batch's opening goes first, confirmed, on its own. A firing whose queue does not exist is
//! not published at all: it is logged at error level, counted, and tried again 1 s later, then
//! with the wait doubling up to a minute, while the schedule's last fire time stays where it was
//! (a new leader tries it again too). Once it fires, the ticks missed meanwhile follow the misfire
//! policy.

use crate::agenda::{Agenda, CatchUp};
use crate::config::SchedulerConfig;
use crate::error::SchedulerError;
use crate::health::Health;
use crate::leader::{self, Leadership, Watch};
use crate::metrics::Metrics;
use crate::schedule::{Firing, MAX_CATCH_UP, Misfire, Schedule, ScheduleInfo};
use crate::state;
use crate::stats::SchedulerStats;
use chrono::{DateTime, TimeDelta, Utc};
use lepus::internal::endpoint::{MetricsRegistry, Serving};
use lepus::internal::{Connector, Entry, Outgoing, Snapshot, Transaction, held_retry_delay, persistent_json, topology};
use lepus::lapin::Confirmation;
use lepus::lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How often a leader checks, while waiting for a tick, that it still leads.
const LEAD_CHECK: Duration = Duration::from_millis(250);

/// How many standby polls a replica that lost the lead waits before it asks for the lock again:
/// two, so that a standby, which asks every poll, takes it first.
const STEP_BACK: u32 = 2;

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
pub struct Scheduler {
    config: SchedulerConfig,
    schedules: Vec<Schedule>,
    stats: Arc<SchedulerStats>,
    exported: MetricsRegistry,
    metrics: Metrics,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").field("config", &self.config).field("schedules", &self.schedules).finish()
    }
}

impl Scheduler {
    /// A replica that fires `schedules`.
    #[must_use]
    pub fn new(config: SchedulerConfig, schedules: Vec<Schedule>) -> Self {
        let exported =
            if config.metrics_addr.is_some() { MetricsRegistry::prometheus() } else { MetricsRegistry::off() };
        let metrics = Metrics::new(&exported, &schedules);
        Self { config, schedules, stats: Arc::default(), exported, metrics }
    }

    /// Counters of what this replica fired and held back, live while it runs.
    #[must_use]
    pub fn stats(&self) -> Arc<SchedulerStats> {
        Arc::clone(&self.stats)
    }

    /// Runs until `shutdown` completes: stands by, leads when it can, releases the lead at the
    /// end. Broker trouble is retried, not returned.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), SchedulerError> {
        self.config.validate()?;
        if self.schedules.is_empty() {
            return Err(SchedulerError::NoSchedules);
        }
        let stop = lepus::internal::cancelled_by(shutdown);
        let health = Arc::new(Health::new(self.metrics.connected.clone(), stop.clone()));
        let endpoint = Serving::start(self.config.metrics_addr, self.exported.clone(), health.readiness())
            .await
            .map_err(SchedulerError::Endpoint)?;
        let name = format!("lepus-scheduler {}", lepus::internal::node_name());
        let connector = Connector::new(&self.config.amqp_url, &self.config.tls, &name)
            .map_err(|e| {
                if matches!(e, lepus::Error::Tls(_)) {
                    SchedulerError::Unreachable(e)
                } else {
                    SchedulerError::Broker(e)
                }
            })?
            .heartbeat(self.config.heartbeat)
            .order(self.config.amqp_url_order);
        // As a worker does, fail at start-up when the broker cannot be reached (a wrong CA, say);
        // once running, a lost broker is waited for. This first connection is the one the replica
        // goes on with: a second would be opened to the node after it, not to the first listed.
        let mut first = Some(connector.connect(self.config.broker_timeout).await.map_err(SchedulerError::Unreachable)?);
        let group = self.config.group.as_str();
        tracing::info!(broker = connector.url(), group, schedules = self.schedules.len(), "scheduler starting");
        let watch = Watch { health: &health, reconnects: &self.metrics.reconnects };
        let announced: Vec<ScheduleInfo> = self.schedules.iter().map(Schedule::info).collect();
        while let Some(leadership) =
            Leadership::acquire(&self.config, &connector, first.take(), &stop, &watch, &announced).await
        {
            self.metrics.leading(true);
            let led = self.lead(&leadership, &connector, &stop).await;
            self.metrics.leading(false);
            match led {
                Ok(()) => {
                    leadership.release().await;
                    break;
                }
                Err(e) => {
                    if matches!(e, LeadEnded::LostLock) {
                        health.lost();
                    }
                    tracing::warn!(error = %e, "stopped leading; standing by");
                    // Its connection died (its node was lost, say): it reconnects within
                    // milliseconds, before any standby asks for the lock again, and would lead on
                    // where a replica that stayed connected should. Leave the lock to those first.
                    if leader::wait(&stop, STEP_BACK * self.config.standby_poll).await {
                        break;
                    }
                }
            }
        }
        endpoint.stop().await;
        tracing::info!("scheduler stopped");
        Ok(())
    }

    /// Fires schedules while this replica leads; `Ok` when told to stop.
    async fn lead(
        &self,
        leadership: &Leadership,
        connector: &Connector,
        stop: &CancellationToken,
    ) -> Result<(), LeadEnded> {
        let names: Vec<&str> = self.schedules.iter().map(Schedule::name).collect();
        let last_fired = state::read_all(connector, &self.config.group, &names, self.config.broker_timeout).await?;
        if !leadership.held() {
            return Err(LeadEnded::LostLock);
        }
        let tx = Transaction::open(leadership.channel().await?, self.config.broker_timeout).await?;
        let mut agendas = Vec::with_capacity(self.schedules.len());
        for (schedule, last) in self.schedules.iter().zip(last_fired) {
            let (agenda, catch_up) = Agenda::new(schedule, last, Utc::now());
            self.caught_up(schedule, catch_up);
            self.metrics.next_fire(schedule.name(), agenda.next());
            agendas.push(agenda);
        }
        let mut holds: Vec<Option<Hold>> = vec![None; self.schedules.len()];
        loop {
            // The schedule to serve next: the earliest owed tick, or retry of a held one.
            let next = agendas.iter().zip(&holds).enumerate().filter_map(|(index, (agenda, hold))| {
                let tick = agenda.next()?;
                Some((index, hold.as_ref().map_or(tick, |hold| hold.retry_at)))
            });
            let Some((index, at)) = next.min_by_key(|(_, at)| *at) else {
                tracing::info!("no schedule has a tick left");
                stop.cancelled().await;
                return Ok(());
            };
            while let Ok(wait) = (at - Utc::now()).to_std() {
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(wait.min(LEAD_CHECK)) => {}
                }
                if !leadership.held() {
                    return Err(LeadEnded::LostLock);
                }
            }
            let (schedule, agenda) = (&self.schedules[index], &mut agendas[index]);
            let Some(tick) = agenda.next() else { continue };
            match self.fire(&tx, leadership, schedule, tick).await? {
                Fired::Done => {
                    holds[index] = None;
                    self.caught_up(schedule, agenda.fired(schedule, Utc::now()));
                    self.metrics.next_fire(schedule.name(), agenda.next());
                }
                Fired::Held { queue } => {
                    let hold = Hold::after(holds[index].take());
                    let held = self.stats.count_held();
                    tracing::error!(
                        schedule = schedule.name(),
                        %tick,
                        queue,
                        retry_in = ?hold.delay,
                        held_total = held,
                        "not fired: no queue of that name exists; the firing is kept and tried again (start a worker on the queue)"
                    );
                    holds[index] = Some(hold);
                }
            }
        }
    }

    /// Publishes one firing and the schedule's new last fire time, in one transaction; or, if a
    /// queue it sends to does not exist, nothing (the firing is held back).
    async fn fire(
        &self,
        tx: &Transaction,
        leadership: &Leadership,
        schedule: &Schedule,
        tick: DateTime<Utc>,
    ) -> Result<Fired, LeadEnded> {
        let id = schedule.firing_id(tick);
        let span = tracing::info_span!("firing", schedule = schedule.name(), job.id = %id);
        async {
            match schedule.firing(tick) {
                Ok(firing) => {
                    for queue in firing.queues() {
                        if !exists(leadership, queue).await? {
                            return Ok(Fired::Held { queue: queue.to_owned() });
                        }
                    }
                    self.publish(tx, leadership, &firing).await?;
                }
                Err(e) => tracing::error!(error = %e, "the schedule produced no valid job; tick skipped"),
            }
            state::record(tx, &self.config.group, schedule.name(), tick).await?;
            let unroutable = tx.commit().await?;
            if unroutable.is_empty() {
                self.stats.count_fired();
                self.metrics.fired(schedule.name());
                tracing::info!(%tick, "fired");
            } else {
                let dropped = self.stats.count_dropped();
                tracing::error!(
                    %tick,
                    queues = ?unroutable,
                    dropped_total = dropped,
                    "fired, but the broker dropped the job: its queue was deleted between the check and the commit"
                );
            }
            Ok(Fired::Done)
        }
        .instrument(span)
        .await
    }

    /// Adds a firing's messages to the transaction: a job, or a batch's jobs (its opening is
    /// published first, confirmed, outside the transaction).
    async fn publish(&self, tx: &Transaction, leadership: &Leadership, firing: &Firing) -> lepus::Result<()> {
        match firing {
            Firing::Job { queue, message } => {
                let (body, properties) = encode(message)?;
                tx.publish(Outgoing { exchange: "", routing_key: queue, body: &body, properties }).await
            }
            Firing::Batch(batch) => {
                open_batch(leadership, &batch.snapshot, self.config.broker_timeout).await?;
                for (queue, message) in &batch.messages {
                    let (body, properties) = encode(message)?;
                    tx.publish(Outgoing { exchange: "", routing_key: queue, body: &body, properties }).await?;
                }
                Ok(())
            }
        }
    }
}

/// Publishes a batch's opening to the batch records queue, confirmed, before the transaction that
/// sends its jobs: the tracker must meet the opening before any record of the batch (see
/// `lepus::batch`), and a job can finish the moment the transaction commits. Should the firing not
/// commit, the next attempt opens the batch again: the tracker ignores an opening of a batch it
/// knows.
async fn open_batch(leadership: &Leadership, snapshot: &Snapshot, timeout: Duration) -> lepus::Result<()> {
    let channel = leadership.channel().await?;
    let opened = async {
        topology::declare_batch_records(&channel).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|source| lepus::Error::Amqp { operation: "confirm select", source })?;
        let body = Entry::Open { open: snapshot.clone() }.encode()?;
        let options = BasicPublishOptions { mandatory: true, immediate: false };
        let routing_key = topology::BATCH_RECORDS_QUEUE;
        let amqp = |operation| move |source| lepus::Error::Amqp { operation, source };
        let confirm = channel
            .basic_publish("".into(), routing_key.into(), options, &body, persistent_json())
            .await
            .map_err(amqp("publish"))?;
        match confirm.await.map_err(amqp("publisher confirm"))? {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) => Err(lepus::Error::Unroutable {
                exchange: String::new(),
                routing_key: routing_key.to_owned(),
                reason: returned.reply_text.to_string(),
            }),
            Confirmation::Nack(_) | Confirmation::NotRequested => {
                Err(lepus::Error::Nacked { routing_key: routing_key.to_owned() })
            }
        }
    };
    let opened = tokio::time::timeout(timeout, opened)
        .await
        .unwrap_or(Err(lepus::Error::Timeout { what: "the confirm of a batch opening", after: timeout }));
    if channel.status().connected() {
        drop(channel.close(200, "opened".into()).await);
    }
    opened
}

/// What became of a firing.
enum Fired {
    /// Published and recorded.
    Done,
    /// Not published: `queue` does not exist.
    Held { queue: String },
}

/// A firing held back: how often its queue was missing, and when to try it again.
#[derive(Debug, Clone, Copy)]
struct Hold {
    refusals: u32,
    retry_at: DateTime<Utc>,
    delay: Duration,
}

impl Hold {
    fn after(previous: Option<Hold>) -> Self {
        let refusals = previous.map_or(1, |hold| hold.refusals + 1);
        let delay = held_retry_delay(refusals);
        Self { refusals, retry_at: Utc::now() + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX), delay }
    }
}

/// Whether `queue` exists, asked on a channel of the leader's connection opened for this alone.
async fn exists(leadership: &Leadership, queue: &str) -> lepus::Result<bool> {
    let channel = leadership.channel().await?;
    let state = topology::inspect_queue_on(&channel, queue).await?;
    if channel.status().connected() {
        drop(channel.close(200, "checked".into()).await);
    }
    Ok(state.is_some())
}

impl Scheduler {
    /// Counts the ticks `schedule` missed in a gap, and logs what its policy decided.
    fn caught_up(&self, schedule: &Schedule, catch_up: Option<CatchUp>) {
        if let Some(catch_up) = catch_up {
            self.metrics.missed(schedule.name(), catch_up.missed);
        }
        log_catch_up(schedule, catch_up);
    }
}

/// Logs what a schedule's misfire policy decided about the ticks missed in a gap.
fn log_catch_up(schedule: &Schedule, catch_up: Option<CatchUp>) {
    let Some(CatchUp { missed, policy, kept }) = catch_up else { return };
    let name = schedule.name();
    match policy {
        Misfire::Skip => tracing::info!(schedule = name, missed, "misfire: skipping the missed ticks (policy skip)"),
        Misfire::Once => {
            tracing::info!(schedule = name, missed, "misfire: one catch-up for the latest missed tick (policy once)");
        }
        Misfire::All => {
            if catch_up.is_some_and(|c| c.truncated()) {
                tracing::warn!(
                    schedule = name,
                    limit = MAX_CATCH_UP,
                    "misfire: more ticks were missed than the catch-up limit; running the first ones"
                );
            }
            tracing::info!(schedule = name, missed = kept, "misfire: running every missed tick (policy all)");
        }
    }
}

fn encode(message: &lepus::protocol::TaskMessage) -> lepus::Result<(Vec<u8>, lepus::lapin::BasicProperties)> {
    message.encode().map_err(|source| lepus::Error::Serde {
        action: "encode",
        what: format!("job {}", message.task),
        source,
    })
}
