//! [`Worker`]: registers handlers, then consumes its queues until told to stop.
//!
//! `run` validates the configuration, connects, declares the queues and consumes them. If the
//! connection drops it reconnects with backoff and consumes again; jobs running at the cut finish,
//! but their acks fail and the broker redelivers them (at-least-once). When the shutdown future
//! completes it stops taking deliveries, waits up to the grace period for running jobs, and returns.

use crate::acks::Acks;
use crate::config::WorkerConfig;
use crate::consumer::{ConsumeLoop, End};
use crate::delivery::Shared;
use crate::error::WorkerError;
use crate::handler::Handler;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::states::States;
use crate::stats::WorkerStats;
use lepus::internal::Publisher;
use lepus::internal::endpoint::{MetricsRegistry, Serving};
use lepus::lapin::Channel;
use lepus::lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lepus::lapin::types::FieldTable;
use lepus::{Broker, Job, WorkQueue};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A worker: a configuration and the jobs it runs.
///
/// ```no_run
/// # use lepus_worker::{JobError, Worker, WorkerConfig, shutdown_signal};
/// # use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize)]
/// struct Add { a: i64, b: i64 }
/// impl lepus::Job for Add { const NAME: &'static str = "demo.add"; type Output = i64; }
///
/// async fn add(job: Add) -> Result<i64, JobError> { Ok(job.a + job.b) }
///
/// # async fn run() -> Result<(), lepus_worker::WorkerError> {
/// Worker::new(WorkerConfig::default()).register(add).run(shutdown_signal()).await
/// # }
/// ```
pub struct Worker {
    config: WorkerConfig,
    registry: Registry,
    states: States,
    stats: Arc<WorkerStats>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("config", &self.config).field("jobs", &self.registry.names()).finish()
    }
}

impl Worker {
    /// A worker with no jobs yet.
    #[must_use]
    pub fn new(config: WorkerConfig) -> Self {
        Self { config, registry: Registry::default(), states: States::default(), stats: Arc::default() }
    }

    /// Registers the handler of job `J`: an async function of the job and up to three more
    /// arguments ([`crate::JobContext`], [`crate::State`], …; see [`crate::Handler`]) that returns
    /// the job's output or any error.
    #[must_use]
    pub fn register<J: Job, Args: 'static>(mut self, handler: impl Handler<J, Args>) -> Self {
        self.registry.insert(handler);
        self
    }

    /// Adds application state (a database pool, an HTTP client…) that handlers take as a
    /// [`crate::State<T>`] argument or read with [`crate::JobContext::state`]; one value per type.
    /// A handler that needs a state nobody added stops the worker at start-up.
    #[must_use]
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.states.insert(value);
        self
    }

    /// Counters of settled deliveries, live while the worker runs.
    #[must_use]
    pub fn stats(&self) -> Arc<WorkerStats> {
        Arc::clone(&self.stats)
    }

    /// Runs until `shutdown` completes, then drains. Fails at start-up for an invalid
    /// configuration or an unreachable broker, and at the end if jobs outlived the grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), WorkerError> {
        let Worker { config, registry, states, stats } = self;
        let queues: Vec<Arc<WorkQueue>> = config.validate()?.into_iter().map(Arc::new).collect();
        if let Some(name) = registry.duplicates().first() {
            return Err(WorkerError::Config(format!("job {name:?} is registered twice")));
        }
        if let Some((job, _, state)) = registry.requirements().find(|(_, id, _)| !states.contains(*id)) {
            return Err(WorkerError::Config(format!(
                "the handler of job {job:?} takes State<{state}>, but no state of that type was added: call Worker::state first"
            )));
        }
        let stop = lepus::internal::cancelled_by(shutdown);
        let metrics_on = config.metrics_addr.is_some();
        let exported = if metrics_on { MetricsRegistry::prometheus() } else { MetricsRegistry::off() };
        let metrics = Metrics::new(&exported, queues.iter().map(|q| q.name()), &registry.names());
        metrics.concurrency.set(f64::from(config.concurrency));
        let health = Arc::new(Health::new(queues.iter().map(|q| q.name()), stop.clone(), metrics.connected.clone()));
        let endpoint =
            Serving::start(config.metrics_addr, exported, health.readiness()).await.map_err(WorkerError::Endpoint)?;
        let name = format!("lepus-worker {}", lepus::internal::node_name());
        let broker = match Broker::connect_with(&config.amqp_url, &config.tls, &name, 1).await {
            Ok(broker) => broker,
            Err(e) => {
                endpoint.stop().await;
                return Err(e.into());
            }
        };
        tracing::info!(
            broker = broker.url(),
            queues = ?config.queues,
            concurrency = config.concurrency,
            jobs = ?registry.names(),
            metrics = metrics_on,
            "worker starting"
        );
        let shared = Arc::new(Shared {
            broker: broker.clone(),
            registry,
            states: Arc::new(states),
            publisher: Publisher::new(broker.clone(), config.broker_timeout),
            stop,
            max_payload: config.max_payload,
            broker_timeout: config.broker_timeout,
            stats,
            metrics,
        });
        let tracker = tokio::spawn(crate::tracker::run(
            broker.clone(),
            config.broker_timeout,
            Arc::clone(&shared.stats),
            shared.metrics.batches_completed.clone(),
            shared.stop.clone(),
        ));
        let reporter = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move { shared.stats.report_every(Duration::from_secs(10)).await }
        });
        let supervisor = Supervisor {
            broker: broker.clone(),
            queues,
            permits: Arc::new(Semaphore::new(usize::from(config.concurrency))),
            tracker: TaskTracker::new(),
            prefetch: config.concurrency,
            shared: Arc::clone(&shared),
            health,
        };
        let first = supervisor.open().await?;
        tracing::info!("worker ready");
        let channel = supervisor.consume_until_stopped(first).await;
        let drained = supervisor.drain(config.grace_period).await;
        reporter.abort();
        drop(tracker.await);
        shared.stats.log_totals();
        if let Some(channel) = channel {
            drop(channel.close(200, "worker stopped".into()).await);
        }
        broker.close().await;
        endpoint.stop().await;
        drained
    }
}

struct Supervisor {
    broker: Broker,
    queues: Vec<Arc<WorkQueue>>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    prefetch: u16,
    shared: Arc<Shared>,
    health: Arc<Health>,
}

impl Supervisor {
    /// Consumes, reconnecting after losses (by `lepus::internal::reconnect`), until the worker is told to
    /// stop. Returns the last channel, to be closed once running jobs have been acked on it.
    async fn consume_until_stopped(&self, first: (Channel, Vec<ConsumeLoop>)) -> Option<Channel> {
        let (mut channel, mut loops) = first;
        loop {
            if self.consume(loops).await == End::Stopped {
                return Some(channel);
            }
            drop(channel.close(200, "reconnecting".into()).await);
            tracing::warn!("lost the broker connection or a consumer; reconnecting");
            (channel, loops) = lepus::internal::reconnect("worker", &self.shared.stop, || self.open()).await?;
            self.shared.metrics.reconnects.increment(1);
            tracing::info!("consuming again");
        }
    }

    /// Opens a channel, declares the queues and starts one consumer per queue.
    async fn open(&self) -> lepus::Result<(Channel, Vec<ConsumeLoop>)> {
        let channel = self.broker.channel().await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions { global: false })
            .await
            .map_err(|source| lepus::Error::Amqp { operation: "basic.qos", source })?;
        let session = CancellationToken::new();
        let acks = Acks::start(channel.clone(), self.shared.broker_timeout);
        let mut loops = Vec::with_capacity(self.queues.len());
        for queue in &self.queues {
            queue.declare(&channel).await?;
            let consumer = channel
                .basic_consume(queue.name().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
                .await
                .map_err(|source| lepus::Error::Amqp { operation: "basic.consume", source })?;
            loops.push(ConsumeLoop {
                queue: Arc::clone(queue),
                channel: channel.clone(),
                consumer,
                shared: Arc::clone(&self.shared),
                acks: acks.clone(),
                permits: Arc::clone(&self.permits),
                tracker: self.tracker.clone(),
                session: session.clone(),
                health: Arc::clone(&self.health),
            });
        }
        Ok((channel, loops))
    }

    /// Runs the consume loops; when one loses its consumer, ends the others too.
    async fn consume(&self, loops: Vec<ConsumeLoop>) -> End {
        let mut running = tokio::task::JoinSet::new();
        let session = loops.first().map(|l| l.session.clone()).unwrap_or_default();
        for consume_loop in loops {
            running.spawn(consume_loop.run());
        }
        let mut end = End::Stopped;
        while let Some(ended) = running.join_next().await {
            if ended.unwrap_or(End::Lost) == End::Lost {
                end = End::Lost;
                session.cancel();
            }
        }
        end
    }

    /// Waits up to `grace` for running jobs to finish.
    async fn drain(&self, grace: Duration) -> Result<(), WorkerError> {
        self.tracker.close();
        let in_flight = self.tracker.len();
        if in_flight > 0 {
            tracing::info!(in_flight, ?grace, "waiting for running jobs to finish");
        }
        match tokio::time::timeout(grace, self.tracker.wait()).await {
            Ok(()) => {
                tracing::info!("all jobs finished; worker stopped");
                Ok(())
            }
            Err(_) => Err(WorkerError::GracePeriodElapsed { in_flight: self.tracker.len(), grace }),
        }
    }
}
