//! The batch tracker: every worker runs one, and the broker lets one at a time consume
//! `lepus.batch.records` (single active consumer). See `lepus::batch` for the whole protocol.
//!
//! - It becomes active on its first delivery (the broker does not say which consumer is active
//!   otherwise): only then does it load the state queue (see [`state`]); an inactive tracker
//!   touches nothing.
//! - For each chunk of records (what arrives within 20 ms of the first, up to 1000 messages), one
//!   transaction: the records acked, the touched batches' new snapshots stored in the state queue
//!   and appended to the progress stream (at most one a second for an unfinished batch: see
//!   [`state`]), the callbacks of the batches that completed published. Completed batches leave
//!   memory at the commit; a record for a batch not in memory is acked, counted and logged.
//! - Every tracker, active or not, publishes a wake-up when it starts and every 30 s: whichever is
//!   active acks it with the records. So a tracker that becomes active when its predecessor dies
//!   gets a delivery within 30 s even when no record comes, loads the state and retries the held
//!   callbacks. Nothing is kept unacked between chunks (the broker's 30-minute acknowledgement
//!   timeout is never near), so each chunk is acked with one `multiple` ack.
//! - A callback whose queue does not exist is not sent: the batch stays finished but not
//!   complete (stored so in the state queue, so a successor retries it too), the error is logged
//!   and counted, and the tracker tries again 1 s later, then with the wait doubling up to a
//!   minute.

mod state;

use crate::stats::WorkerStats;
use futures_lite::StreamExt;
use lepus::BatchId;
use lepus::Broker;
use lepus::internal::{Completion, Entry, Outgoing, Transaction, held_retry_delay, persistent_json, topology};
use lepus::lapin::Consumer;
use lepus::lapin::message::Delivery;
use lepus::lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lepus::lapin::types::FieldTable;
use metrics::Counter;
use state::{State, ack_up_to, commit};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Messages of records handled in one transaction, at most (and the consumer's prefetch).
const CHUNK: usize = 1000;

/// How long a tracker gathers records into a chunk after the first.
const GATHER: Duration = Duration::from_millis(20);

/// How often a tracker publishes a wake-up.
const WAKE_EVERY: Duration = Duration::from_secs(30);

/// How long a callback queue found to exist is taken to exist without asking again (a queue
/// deleted meanwhile makes the callback unroutable: logged and counted as dropped).
const KNOWN_QUEUE_FOR: Duration = Duration::from_secs(10);

/// What a tracker is told at start.
pub(crate) struct Setup {
    pub(crate) broker: Broker,
    /// How long each broker call may take.
    pub(crate) timeout: Duration,
    /// The progress stream's retention (the worker setting `batch_retention`).
    pub(crate) retention: Duration,
    /// The worker's node name, in its wake-up.
    pub(crate) node: Arc<str>,
    pub(crate) stats: Arc<WorkerStats>,
    /// `lepus_batches_completed_total`.
    pub(crate) completed: Counter,
}

/// Declares the batch queues and the progress stream with `retention`; fails, naming the setting
/// `batch_retention`, if the stream exists with another.
pub(crate) async fn declare(broker: &Broker, retention: Duration) -> lepus::Result<()> {
    let channel = broker.channel().await?;
    let declared = declare_on(&channel, retention).await;
    if channel.status().connected() {
        drop(channel.close(200, "declared".into()).await);
    }
    declared
}

async fn declare_on(channel: &lepus::lapin::Channel, retention: Duration) -> lepus::Result<()> {
    topology::declare_batch_records(channel).await?;
    topology::declare_batch_state(channel).await?;
    topology::declare_batch_progress(channel, retention).await
}

/// Tracks batches until `stop`, starting again (by the reconnect policy) after failures.
pub(crate) async fn run(setup: Setup, stop: CancellationToken) {
    let setup = Arc::new(setup);
    let start = || Tracker::start(Arc::clone(&setup));
    while let Some(mut tracker) = lepus::internal::reconnect("batch tracker", &stop, start).await {
        match tracker.track(&stop).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "batch tracker stopped; starting again"),
        }
    }
}

/// Why a tracker stopped.
#[derive(Debug, thiserror::Error)]
enum Stopped {
    #[error(transparent)]
    Broker(#[from] lepus::Error),
    #[error("the broker cancelled the consumer of lepus.batch.records")]
    ConsumerEnded,
}

struct Tracker {
    setup: Arc<Setup>,
    tx: Transaction,
    consumer: Consumer,
    /// The live batches; `None` until this tracker is the active consumer.
    state: Option<State>,
    /// Finished batches whose callback waits for its queue.
    held: HashMap<BatchId, Held>,
    /// When to publish the next wake-up.
    wake_at: Instant,
    /// Callback queues found to exist, and when.
    known_queues: HashMap<String, Instant>,
}

/// A finished batch whose callback's queue does not exist yet.
struct Held {
    retry_at: Instant,
    /// How often its callback's queue was found missing.
    refusals: u32,
}

/// What became of a batch asked to complete.
enum Due {
    /// Jobs are still running.
    No,
    /// Complete: the callback, if any, is in the transaction.
    Completed,
    /// Every job has finished, but the callback's queue does not exist: nothing was sent.
    Held { queue: String },
}

impl Tracker {
    async fn start(setup: Arc<Setup>) -> Result<Self, Stopped> {
        let channel = setup.broker.channel().await?;
        declare_on(&channel, setup.retention).await?;
        channel.basic_qos(CHUNK as u16, BasicQosOptions { global: false }).await.map_err(amqp("basic.qos"))?;
        let tx = Transaction::open(channel, setup.timeout).await?;
        let consumer = tx
            .channel()
            .basic_consume(
                topology::BATCH_RECORDS_QUEUE.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp("basic.consume"))?;
        let mut tracker = Self {
            setup,
            tx,
            consumer,
            state: None,
            held: HashMap::new(),
            wake_at: Instant::now(),
            known_queues: HashMap::new(),
        };
        tracker.publish_wake().await?;
        Ok(tracker)
    }

    async fn track(&mut self, stop: &CancellationToken) -> Result<(), Stopped> {
        loop {
            let retry_at = self.held.values().map(|held| held.retry_at).min();
            let flush_at = self.state.as_ref().and_then(State::next_flush);
            let first = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = sleep_until(flush_at) => {
                    if let Some(state) = self.state.as_mut() {
                        state.flush(&self.tx).await?;
                    }
                    self.commit(&[]).await?;
                    continue;
                }
                () = sleep_until(retry_at) => {
                    self.retry_held().await?;
                    continue;
                }
                () = tokio::time::sleep_until(self.wake_at) => {
                    self.publish_wake().await?;
                    continue;
                }
                next = self.consumer.next() => next,
            };
            // Gather for a moment: each transaction costs the broker a write to each queue it
            // touches, so fewer, larger chunks cost less.
            let mut chunk = vec![delivery(first)?];
            let gathered_by = Instant::now() + GATHER;
            while chunk.len() < CHUNK {
                match tokio::time::timeout_at(gathered_by, self.consumer.next()).await {
                    Ok(next) => chunk.push(delivery(next)?),
                    Err(_) => break,
                }
            }
            if self.state.is_none() {
                self.activate().await?;
            }
            self.handle(chunk).await?;
            if let Some(state) = self.state.as_mut().filter(|state| state.needs_compaction()) {
                state.compact(&self.tx).await?;
            }
        }
    }

    /// This tracker is the active one: loads the state, and retries the held callbacks at once.
    async fn activate(&mut self) -> Result<(), Stopped> {
        let state = State::load(&self.tx).await?;
        let now = Instant::now();
        for (batch, snapshot) in &state.live {
            if snapshot.all_finished() {
                self.held.insert(batch.clone(), Held { retry_at: now, refusals: 0 });
            }
        }
        self.state = Some(state);
        Ok(())
    }

    /// Applies a chunk of entries in one transaction.
    async fn handle(&mut self, chunk: Vec<Delivery>) -> Result<(), Stopped> {
        let Some(state) = self.state.as_mut() else { return Ok(()) };
        let mut touched: Vec<BatchId> = Vec::new();
        let mut seen: HashSet<BatchId> = HashSet::new();
        let mut unknown: HashMap<BatchId, u64> = HashMap::new();
        for delivery in &chunk {
            match serde_json::from_slice::<Entry>(&delivery.data) {
                Ok(Entry::Wake { .. }) => {}
                Ok(Entry::Open { open }) => {
                    let batch = open.batch.clone();
                    if !state.live.contains_key(&batch) {
                        state.live.insert(batch.clone(), open);
                        if seen.insert(batch.clone()) {
                            touched.push(batch);
                        }
                    }
                }
                Ok(Entry::Done { done }) => {
                    for record in done {
                        match state.live.get_mut(&record.batch) {
                            Some(snapshot) => {
                                if snapshot.apply(&record) && seen.insert(record.batch.clone()) {
                                    touched.push(record.batch);
                                }
                            }
                            None => *unknown.entry(record.batch).or_default() += 1,
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "undecodable batch record; dropped"),
            }
        }
        if let Some(last) = chunk.last() {
            ack_up_to(last).await?;
        }
        let mut completed = Vec::new();
        let mut newly_held = Vec::new();
        for batch in touched {
            let due = if self.held.contains_key(&batch) { Due::No } else { self.complete_if_due(&batch).await? };
            match due {
                Due::Completed => completed.push(batch.clone()),
                Due::Held { queue } => newly_held.push((batch.clone(), queue)),
                Due::No => {}
            }
            self.write(&batch).await?;
        }
        if let Some(state) = self.state.as_mut() {
            state.flush(&self.tx).await?;
        }
        self.commit(&completed).await?;
        for (batch, queue) in newly_held {
            self.hold(batch, &queue, 1);
        }
        for (batch, records) in unknown {
            let unknown_total = self.setup.stats.count_unknown_batch_records(records);
            tracing::warn!(
                %batch,
                records,
                unknown_total,
                "records for a batch this tracker does not know (finished and compacted, or never opened); dropped"
            );
        }
        Ok(())
    }

    /// Tries again the callbacks whose time has come, in one transaction.
    async fn retry_held(&mut self) -> Result<(), Stopped> {
        let now = Instant::now();
        let due: Vec<BatchId> =
            self.held.iter().filter(|(_, held)| held.retry_at <= now).map(|(id, _)| id.clone()).collect();
        let mut completed = Vec::new();
        for batch in due {
            match self.complete_if_due(&batch).await? {
                Due::Held { queue } => {
                    let refusals = self.held.get(&batch).map_or(0, |held| held.refusals);
                    self.hold(batch, &queue, refusals + 1);
                }
                Due::Completed => {
                    self.held.remove(&batch);
                    self.write(&batch).await?;
                    completed.push(batch);
                }
                Due::No => {
                    self.held.remove(&batch);
                }
            }
        }
        self.commit(&completed).await
    }

    /// Publishes a wake-up (committed at once), and when the next one is due.
    async fn publish_wake(&mut self) -> Result<(), Stopped> {
        self.wake_at = Instant::now() + WAKE_EVERY;
        let body = Entry::Wake { wake: self.setup.node.to_string() }.encode()?;
        let routing_key = topology::BATCH_RECORDS_QUEUE;
        self.tx.publish(Outgoing { exchange: "", routing_key, body: &body, properties: persistent_json() }).await?;
        self.commit(&[]).await
    }

    /// If every job of `batch` has finished, publishes its callback (if its queue exists) in the
    /// transaction and marks the batch complete.
    async fn complete_if_due(&mut self, batch: &BatchId) -> Result<Due, Stopped> {
        let Some(snapshot) = self.state.as_mut().and_then(|state| state.live.get_mut(batch)) else {
            return Ok(Due::No);
        };
        let Completion::Due { callback } = snapshot.apply_all(&[]) else { return Ok(Due::No) };
        if let Some(callback) = callback {
            let (queue, message) = *callback;
            if !self.queue_exists(&queue).await? {
                return Ok(Due::Held { queue });
            }
            let (body, properties) = message.encode().map_err(|source| lepus::Error::Serde {
                action: "encode",
                what: "a batch callback".into(),
                source,
            })?;
            self.tx.publish(Outgoing { exchange: "", routing_key: &queue, body: &body, properties }).await?;
        }
        if let Some(snapshot) = self.state.as_mut().and_then(|state| state.live.get_mut(batch)) {
            snapshot.complete = true;
        }
        Ok(Due::Completed)
    }

    /// Adds `batch`'s next snapshot to the transaction; a complete batch leaves memory.
    async fn write(&mut self, batch: &BatchId) -> Result<(), Stopped> {
        let Some(state) = self.state.as_mut() else { return Ok(()) };
        let Some(snapshot) = state.live.get_mut(batch) else { return Ok(()) };
        snapshot.seq += 1;
        let snapshot = snapshot.clone();
        state.write(&self.tx, &snapshot).await?;
        if snapshot.complete {
            state.live.remove(batch);
        }
        Ok(())
    }

    async fn queue_exists(&mut self, queue: &str) -> Result<bool, Stopped> {
        if self.known_queues.get(queue).is_some_and(|at| at.elapsed() < KNOWN_QUEUE_FOR) {
            return Ok(true);
        }
        let exists = topology::inspect_queue(&self.setup.broker, queue).await?.is_some();
        if exists {
            self.known_queues.insert(queue.to_owned(), Instant::now());
        }
        Ok(exists)
    }

    /// Remembers a finished batch whose callback's queue is missing; says so at error level.
    fn hold(&mut self, batch: BatchId, queue: &str, refusals: u32) {
        let delay = held_retry_delay(refusals);
        let held_total = self.setup.stats.count_held_callback();
        tracing::error!(
            %batch,
            queue,
            retry_in = ?delay,
            held_total,
            "batch finished, but its callback's queue does not exist; the callback is kept and tried again (start a worker on the queue)"
        );
        self.held.insert(batch, Held { retry_at: Instant::now() + delay, refusals });
    }

    /// Commits the transaction; logs the batches it completed.
    async fn commit(&self, completed: &[BatchId]) -> Result<(), Stopped> {
        for queue in commit(&self.tx).await? {
            let dropped_total = self.setup.stats.count_dropped_callback();
            tracing::error!(
                queue,
                dropped_total,
                "a batch callback was dropped by the broker: its queue was deleted between the check and the commit"
            );
        }
        for batch in completed {
            self.setup.completed.increment(1);
            tracing::info!(%batch, "batch complete");
        }
        Ok(())
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn delivery(next: Option<lepus::lapin::Result<Delivery>>) -> Result<Delivery, Stopped> {
    match next {
        Some(Ok(delivery)) => Ok(delivery),
        Some(Err(e)) => Err(amqp("consume")(e).into()),
        None => Err(Stopped::ConsumerEnded),
    }
}

fn amqp(operation: &'static str) -> impl FnOnce(lepus::lapin::Error) -> lepus::Error {
    move |source| lepus::Error::Amqp { operation, source }
}
