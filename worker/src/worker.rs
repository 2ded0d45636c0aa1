//! [`Worker`]: registers handlers, then consumes its queues until told to stop.
//!
//! `run` validates the configuration, connects, declares the queues and consumes them. If the
//! connection drops it reconnects with backoff and consumes again; jobs running at the cut finish,
//! but their acks fail and the broker redelivers them (at-least-once). When the shutdown future
//! completes it stops taking deliveries, waits up to the grace period for running jobs, and returns.

use crate::acks::Acks;
use crate::activity::Activity;
use crate::batch_records::BatchRecords;
use crate::commands::Panel;
use crate::config::WorkerConfig;
use crate::consumer::{ConsumeLoop, End};
use crate::control;
use crate::delivery::Shared;
use crate::error::WorkerError;
use crate::events::Events;
use crate::handler::Handler;
use crate::health::Health;
use crate::loops::QueueLoop;
use crate::metrics::Metrics;
use crate::priorities::Priorities;
use crate::queues::{Change, QueueSet};
use crate::rate_limits::RateLimits;
use crate::registry::Registry;
use crate::revoked::Revoked;
use crate::states::States;
use crate::stats::WorkerStats;
use crate::subscription::{Service, Subscription};
use crate::tiers::TieredLoop;
use lepus::internal::Publisher;
use lepus::internal::endpoint::{MetricsRegistry, Serving};
use lepus::internal::topology;
use lepus::lapin::Channel;
use lepus::lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lepus::lapin::types::FieldTable;
use lepus::{Broker, Connector, Job, ReplyCode, WorkQueue};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::sync::mpsc;
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
    subscriptions: Vec<Subscription>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("jobs", &self.registry.names())
            .field("subscriptions", &self.subscriptions)
            .finish()
    }
}

impl Worker {
    /// A worker with no jobs yet.
    #[must_use]
    pub fn new(config: WorkerConfig) -> Self {
        let subscriptions = Vec::new();
        Self { config, registry: Registry::default(), states: States::default(), stats: Arc::default(), subscriptions }
    }

    /// Runs a service's [`Subscription`]: its queue (or ordered partitions) is declared, bound to
    /// its patterns and consumed beside the work queues, its events run by its handlers. A worker
    /// may run several services, and may consume no work queue at all (`queues` empty).
    #[must_use]
    pub fn subscribe(mut self, subscription: Subscription) -> Self {
        self.subscriptions.push(subscription);
        self
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
        let Worker { config, registry, states, stats, subscriptions } = self;
        let queues: Vec<Arc<WorkQueue>> =
            config.validate_subscribing(!subscriptions.is_empty())?.into_iter().map(Arc::new).collect();
        if let Some(name) = registry.duplicates().first() {
            return Err(WorkerError::Config(format!("job {name:?} is registered twice")));
        }
        if let Some((job, _, state)) = registry.requirements().find(|(_, id, _)| !states.contains(*id)) {
            return Err(WorkerError::Config(format!(
                "the handler of job {job:?} takes State<{state}>, but no state of that type was added: call Worker::state first"
            )));
        }
        let services = services(subscriptions, &config, &states)?;
        let stop = lepus::internal::cancelled_by(shutdown);
        let metrics_on = config.metrics_addr.is_some();
        let exported = if metrics_on { MetricsRegistry::prometheus() } else { MetricsRegistry::off() };
        let mut names = registry.names();
        names.extend(services.iter().flat_map(|service| service.registry.names()));
        let service_queues: Vec<WorkQueue> = services.iter().flat_map(|service| service.topology.queues()).collect();
        let work_queues =
            crate::tiers::consumed(&queues, config.priorities).map_err(|e| WorkerError::Config(e.to_string()))?;
        let consumed = || work_queues.iter().map(String::as_str).chain(service_queues.iter().map(WorkQueue::name));
        let metrics = Metrics::new(&exported, consumed(), &names);
        metrics.concurrency.set(f64::from(config.concurrency));
        let health = Arc::new(Health::new(consumed(), stop.clone(), metrics.connected.clone()));
        let endpoint =
            Serving::start(config.metrics_addr, exported, health.readiness()).await.map_err(WorkerError::Endpoint)?;
        let name = format!("lepus-worker {}", lepus::internal::node_name());
        let connector = Connector::new(&config.amqp_url, &config.tls, &name).map(|c| c.order(config.amqp_url_order));
        let connected = match connector {
            Ok(connector) => Broker::connect_through(connector, 1).await,
            Err(e) => Err(e),
        };
        let broker = match connected {
            Ok(broker) => broker,
            Err(e) => {
                endpoint.stop().await;
                return Err(e.into());
            }
        };
        if let Err(e) = crate::tracker::declare(&broker, config.batch_retention).await {
            endpoint.stop().await;
            broker.close().await;
            return Err(e.into());
        }
        let node: Arc<str> = config.node_name().into();
        let job_names = registry.names();
        tracing::info!(
            broker = broker.url(),
            node = &*node,
            queues = ?config.queues,
            services = ?services.iter().map(|service| &*service.name).collect::<Vec<_>>(),
            concurrency = config.concurrency,
            jobs = ?job_names,
            metrics = metrics_on,
            events = config.events,
            remote_control = config.remote_control,
            "worker starting"
        );
        let control = if config.remote_control {
            match control::open(&broker, &node).await {
                Ok(opened) => Some(opened),
                Err(e) if e.reply_code() == Some(ReplyCode::ResourceLocked) => {
                    endpoint.stop().await;
                    broker.close().await;
                    return Err(WorkerError::Config(format!(
                        "the node name {node:?} is in use by another running worker: give each worker its own --name"
                    )));
                }
                Err(e) => {
                    endpoint.stop().await;
                    return Err(e.into());
                }
            }
        } else {
            None
        };
        let clock = Arc::new(AtomicU64::new(0));
        let activity = Arc::new(Activity::new(&job_names));
        let revoked = Arc::new(Revoked::default());
        let observed = CancellationToken::new();
        let (events, publishing) = Events::start(
            broker.clone(),
            Arc::clone(&node),
            config.events,
            Arc::clone(&clock),
            Arc::clone(&activity),
            observed.clone(),
        );
        let rate_limits = RateLimits::start(broker.clone(), stop.clone(), registry.rate_limits());
        let shared = Arc::new(Shared {
            broker: broker.clone(),
            registry,
            states: Arc::new(states),
            publisher: Publisher::new(broker.clone(), config.broker_timeout),
            batch_records: BatchRecords::start(broker.clone(), config.broker_timeout),
            stop,
            max_payload: config.max_payload,
            broker_timeout: config.broker_timeout,
            slot_wait: config.slot_wait,
            slot_channels: Arc::default(),
            stats,
            metrics,
            activity: Arc::clone(&activity),
            revoked: Arc::clone(&revoked),
            events: Arc::clone(&events),
            rate_limits,
        });
        let tracker = tokio::spawn(crate::tracker::run(
            crate::tracker::Setup {
                broker: broker.clone(),
                timeout: config.broker_timeout,
                retention: config.batch_retention,
                node: Arc::clone(&node),
                stats: Arc::clone(&shared.stats),
                completed: shared.metrics.batches_completed.clone(),
            },
            shared.stop.clone(),
        ));
        let reporter = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move { shared.stats.report_every(Duration::from_secs(10)).await }
        });
        let (queue_set, changes) = QueueSet::new(queues, config.delivery_limit);
        let queue_set = Arc::new(queue_set.with_tiers(config.priorities.is_some()));
        let controlling = control.map(|first| {
            let panel = Panel {
                node,
                jobs: job_names,
                activity,
                revoked,
                events,
                queues: Arc::clone(&queue_set),
                concurrency: config.concurrency,
                broker: broker_info(&config.amqp_url),
                stop: shared.stop.clone(),
                clock,
            };
            tokio::spawn(control::serve(broker.clone(), Arc::new(panel), first, observed.clone()))
        });
        let supervisor = Supervisor {
            broker: broker.clone(),
            queues: queue_set,
            services,
            event_log: config.event_log,
            changes: tokio::sync::Mutex::new(changes),
            permits: Arc::new(Semaphore::new(usize::from(config.concurrency))),
            tracker: TaskTracker::new(),
            prefetch: config.concurrency,
            priorities: config.priorities,
            shared: Arc::clone(&shared),
            health,
        };
        for service in &supervisor.services {
            crate::replay::replay(&broker, service, &shared, &config.event_log).await?;
        }
        let first = supervisor.open().await?;
        tracing::info!("worker ready");
        let channel = supervisor.consume_until_stopped(first).await;
        let drained = supervisor.drain(config.grace_period).await;
        // Events and remote control last until the running jobs are done.
        observed.cancel();
        drop(publishing.await);
        if let Some(controlling) = controlling {
            drop(controlling.await);
        }
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

/// The subscriptions as services, checked: names, handlers, the state they need.
fn services(
    subscriptions: Vec<Subscription>,
    config: &WorkerConfig,
    states: &States,
) -> Result<Vec<Arc<Service>>, WorkerError> {
    let mut services: Vec<Arc<Service>> = Vec::new();
    for subscription in subscriptions {
        let service = subscription
            .into_service(config.delivery_limit, config.replay_from)
            .map_err(|e| WorkerError::Config(e.to_string()))?;
        if services.iter().any(|other| other.name == service.name) {
            return Err(WorkerError::Config(format!("service {:?} is subscribed twice", service.name)));
        }
        if let Some(name) = service.registry.duplicates().first() {
            return Err(WorkerError::Config(format!("event {name:?} has two handlers in service {:?}", service.name)));
        }
        if let Some((event, _, state)) = service.registry.requirements().find(|(_, id, _)| !states.contains(*id)) {
            return Err(WorkerError::Config(format!(
                "the handler of event {event:?} of service {:?} takes State<{state}>, but no state of that type was added: call Worker::state first",
                service.name
            )));
        }
        services.push(Arc::new(service));
    }
    Ok(services)
}

/// Sets the prefetch of the consumers `channel` starts from now on.
async fn qos(channel: &Channel, prefetch: u16) -> lepus::Result<()> {
    channel
        .basic_qos(prefetch, BasicQosOptions { global: false })
        .await
        .map_err(|source| lepus::Error::Amqp { operation: "basic.qos", source })
}

/// The broker as remote control's `stats` shows it (as Celery shows its broker; no password):
/// the first URL, the others as alternates.
fn broker_info(urls: &str) -> serde_json::Value {
    let mut urls = urls.split(',').map(str::trim).filter(|url| !url.is_empty());
    let url = urls.next().unwrap_or_default();
    let alternates: Vec<String> = urls.map(lepus::internal::redact).collect();
    let uri: Option<lepus::lapin::uri::AMQPUri> = url.parse().ok();
    let uri = uri.as_ref();
    serde_json::json!({
        "hostname": uri.map(|u| u.authority.host.clone()),
        "userid": uri.map(|u| u.authority.userinfo.username.clone()),
        "virtual_host": uri.map(|u| u.vhost.clone()),
        "port": uri.map(|u| u.authority.port),
        "insist": false,
        "ssl": url.trim_start().starts_with("amqps://"),
        "transport": "amqp",
        "connect_timeout": 10,
        "transport_options": {},
        "login_method": "PLAIN",
        "uri_prefix": null,
        "heartbeat": uri.and_then(|u| u.query.heartbeat),
        "failover_strategy": "round-robin",
        "alternates": alternates,
    })
}

struct Supervisor {
    broker: Broker,
    queues: Arc<QueueSet>,
    /// The services whose subscriptions this worker runs.
    services: Vec<Arc<Service>>,
    event_log: lepus::EventLog,
    /// Changes of `queues` (remote control), applied to the running session.
    changes: tokio::sync::Mutex<mpsc::UnboundedReceiver<Change>>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    prefetch: u16,
    /// Whether each work queue is consumed with its priority tiers, and in which order.
    priorities: Option<Priorities>,
    shared: Arc<Shared>,
    health: Arc<Health>,
}

/// One channel's consuming: its acks, and the token that ends every loop on it when one loses
/// its consumer.
struct Session {
    channel: Channel,
    acks: Acks,
    lost: CancellationToken,
}

impl Supervisor {
    /// Consumes, reconnecting after losses (by `lepus::internal::reconnect`), until the worker is told to
    /// stop. Returns the last channel, to be closed once running jobs have been acked on it.
    async fn consume_until_stopped(&self, first: (Session, Vec<QueueLoop>)) -> Option<Channel> {
        let (mut session, mut loops) = first;
        loop {
            if self.consume(&session, loops).await == End::Stopped {
                return Some(session.channel);
            }
            drop(session.channel.close(200, "reconnecting".into()).await);
            tracing::warn!("lost the broker connection or a consumer; reconnecting");
            (session, loops) = lepus::internal::reconnect("worker", &self.shared.stop, || self.open()).await?;
            self.shared.metrics.reconnects.increment(1);
            tracing::info!("consuming again");
        }
    }

    /// Opens a channel, declares the queues and starts one consumer per queue.
    async fn open(&self) -> lepus::Result<(Session, Vec<QueueLoop>)> {
        let channel = self.broker.channel().await?;
        qos(&channel, self.prefetch).await?;
        let acks = Acks::start(channel.clone(), self.shared.broker_timeout);
        let session = Session { channel, acks, lost: CancellationToken::new() };
        let mut loops = Vec::new();
        for queue in self.queues.list() {
            loops.push(self.work_loop(&session, queue).await?);
        }
        if !self.services.is_empty() {
            topology::declare_events(&session.channel, &self.event_log).await?;
        }
        for service in &self.services {
            // An ordered partition's events are handed out one at a time: the next only once the
            // one before is acked.
            let prefetch = if service.ordered() { 1 } else { self.prefetch };
            qos(&session.channel, prefetch).await?;
            for queue in service.topology.declare(&session.channel).await? {
                let service = Some(Arc::clone(service));
                loops.push(QueueLoop::Plain(self.consume_loop(&session, Arc::new(queue), service).await?));
            }
        }
        qos(&session.channel, self.prefetch).await?;
        Ok((session, loops))
    }

    /// Declares work queue `queue` and consumes it in `session`: alone, or with its priority
    /// tiers (each consumer with the tiers' prefetch) when the worker's `priorities` are set.
    async fn work_loop(&self, session: &Session, queue: Arc<WorkQueue>) -> lepus::Result<QueueLoop> {
        let Some(order) = self.priorities else {
            return Ok(QueueLoop::Plain(self.consume_loop(session, queue, None).await?));
        };
        let [high, normal, low] = topology::tier_queues(&queue)?;
        qos(&session.channel, crate::tiers::prefetch(self.prefetch)).await?;
        let high = self.consume_loop(session, Arc::new(high), None).await?;
        let normal = self.consume_loop(session, Arc::new(normal), None).await?;
        let low = self.consume_loop(session, Arc::new(low), None).await?;
        qos(&session.channel, self.prefetch).await?;
        Ok(QueueLoop::Tiered(TieredLoop::new(order, [high, normal, low])))
    }

    /// Declares `queue` (a service's queues are declared with the service) and starts consuming
    /// it in `session`.
    async fn consume_loop(
        &self,
        session: &Session,
        queue: Arc<WorkQueue>,
        service: Option<Arc<Service>>,
    ) -> lepus::Result<ConsumeLoop> {
        if service.is_none() {
            queue.declare(&session.channel).await?;
        }
        let consumer = session
            .channel
            .basic_consume(queue.name().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(|source| lepus::Error::Amqp { operation: "basic.consume", source })?;
        Ok(ConsumeLoop {
            queue,
            service,
            channel: session.channel.clone(),
            consumer,
            shared: Arc::clone(&self.shared),
            acks: session.acks.clone(),
            permits: Arc::clone(&self.permits),
            tracker: self.tracker.clone(),
            session: session.lost.clone(),
            health: Arc::clone(&self.health),
            own: CancellationToken::new(),
        })
    }

    /// Runs the consume loops, starting and stopping loops as the queue set changes; when one
    /// loses its consumer, ends the others too. `Stopped` once told to stop, else `Lost`.
    async fn consume(&self, session: &Session, loops: Vec<QueueLoop>) -> End {
        let mut running = tokio::task::JoinSet::new();
        let mut own: HashMap<String, CancellationToken> = HashMap::new();
        for consume_loop in loops {
            own.insert(consume_loop.name().to_owned(), consume_loop.own());
            running.spawn(consume_loop.run());
        }
        let mut changes = self.changes.lock().await;
        let mut end = End::Stopped;
        loop {
            if running.is_empty() && (end == End::Lost || self.shared.stop.is_cancelled()) {
                return end;
            }
            tokio::select! {
                ended = running.join_next(), if !running.is_empty() => {
                    if let Some(ended) = ended && ended.unwrap_or(End::Lost) == End::Lost {
                        end = End::Lost;
                        session.lost.cancel();
                    }
                }
                change = changes.recv() => match change {
                    Some(Change::Add(queue)) if !own.contains_key(queue.name()) && end != End::Lost => {
                        match self.work_loop(session, Arc::clone(&queue)).await {
                            Ok(consume_loop) => {
                                tracing::info!(queue = queue.name(), "consuming (remote control)");
                                own.insert(queue.name().to_owned(), consume_loop.own());
                                running.spawn(consume_loop.run());
                            }
                            Err(e) => tracing::error!(queue = queue.name(), error = %e, "cannot consume the queue"),
                        }
                    }
                    Some(Change::Cancel(name)) => {
                        if let Some(token) = own.remove(&name) {
                            token.cancel();
                        }
                    }
                    Some(Change::Add(_)) | None => {}
                },
                () = self.shared.stop.cancelled(), if running.is_empty() => return End::Stopped,
            }
        }
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
