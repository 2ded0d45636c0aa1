//! Subscriptions to data events (see `lepus::event`; not the Celery monitoring events of
//! `crate::events`): a [`Subscription`] is a service's typed handlers by event name and the
//! patterns it binds; a [`Service`] is the same, checked, as the worker runs it.
//!
//! An event delivery goes down the jobs' path (`crate::delivery`, `crate::execute`): its
//! envelope becomes a task message named after the event, with the body as the only argument
//! and the event id as the id, run by the service's handler under its retry policy and time
//! limit, dead-lettered with a reason to `lepus.service.<name>.dlq`, retried through the delay
//! cascade back to the service's queue. An ordered service retries in place instead (see
//! [`Subscription::ordered`]).
//!
//! A new service may first replay the event stream ([`Subscription::replay`], run by
//! `crate::replay`): [`topic`] matches event names to its patterns as the broker does, and the
//! service's [`Switch`] holds the ids the replay handled that its queue may bring again.

mod from;
mod handler;
mod seen;
mod switch;
mod topic;

pub use from::ReplayFrom;
pub use handler::EventHandler;
pub use seen::Seen;
pub(crate) use switch::Switch;

use crate::event_context::EventContext;
use crate::registry::{Registered, Registry};
use handler::TypedEvent;
use lepus::internal::topology::ServiceTopology;
use lepus::protocol::{Arguments, TaskMessage};
use lepus::{Envelope, Event, JobId, RetryPolicy};
use std::any::TypeId;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// How a subscription retries a failed handler unless told otherwise: 3 attempts, waiting about
/// 1 s, then 2 s.
#[must_use]
pub fn default_event_retry() -> RetryPolicy {
    RetryPolicy::attempts(3)
}

/// A service's subscription: its handlers by event type, the patterns it binds, and how it runs
/// them. Every worker process of the service shares its queue, so each event is handled once
/// per service however many processes run it.
///
/// ```no_run
/// # use serde::{Deserialize, Serialize};
/// # use lepus_worker::{EventContext, Subscription, Worker, WorkerConfig};
/// #[derive(Serialize, Deserialize)]
/// struct OrderCreated { order: u64 }
/// impl lepus::Event for OrderCreated { const NAME: &'static str = "orders.created"; }
///
/// async fn bill(order: OrderCreated, ctx: EventContext) -> anyhow::Result<()> {
///     println!("billing order {} (event {})", order.order, ctx.id());
///     Ok(())
/// }
///
/// let worker = Worker::new(WorkerConfig::default().queues(Vec::<String>::new()))
///     .subscribe(Subscription::service("billing").on(bill));
/// ```
pub struct Subscription {
    service: String,
    handlers: Vec<Handler>,
    patterns: Vec<String>,
    partitions: Option<u16>,
    retry: RetryPolicy,
    time_limit: Option<Duration>,
    replay: Option<ReplayFrom>,
}

struct Handler {
    name: &'static str,
    handler: Arc<dyn crate::registry::Erased>,
    required_states: Vec<(TypeId, &'static str)>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let events: Vec<&str> = self.handlers.iter().map(|h| h.name).collect();
        f.debug_struct("Subscription")
            .field("service", &self.service)
            .field("events", &events)
            .field("patterns", &self.patterns)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The subscription of service `name` (its queue is `lepus.service.<name>`), with no handler
    /// yet.
    #[must_use]
    pub fn service(name: impl Into<String>) -> Self {
        Self {
            service: name.into(),
            handlers: Vec::new(),
            patterns: Vec::new(),
            partitions: None,
            retry: default_event_retry(),
            time_limit: None,
            replay: None,
        }
    }

    /// Handles events of type `E` with `handler` (an async function of the event and up to three
    /// more arguments: [`crate::EventContext`], [`crate::State`], …), and binds `E::NAME`.
    #[must_use]
    pub fn on<E: Event, Args: 'static, H: EventHandler<E, Args>>(mut self, handler: H) -> Self {
        let required_states = H::required_states();
        let typed = TypedEvent { handler, event: PhantomData::<fn(E, Args)> };
        self.handlers.push(Handler { name: E::NAME, handler: Arc::new(typed), required_states });
        if !self.patterns.iter().any(|p| p == E::NAME) {
            self.patterns.push(E::NAME.to_owned());
        }
        self
    }

    /// Also binds topic pattern `pattern` (`orders.*`: one word, `#.created`: any words). Events
    /// it brings that no handler takes are dead-lettered as `unknown-event`.
    #[must_use]
    pub fn pattern(mut self, pattern: impl Into<String>) -> Self {
        let pattern = pattern.into();
        if !self.patterns.contains(&pattern) {
            self.patterns.push(pattern);
        }
        self
    }

    /// Handles events of the same key in publish order, over `partitions` queues (1 to 64) with
    /// a single active consumer each. Each partition is handled by one process at a time, one
    /// event after the other; a failed event is retried in place, after its backoff, before the
    /// next event of its partition (after the last attempt it is dead-lettered and the partition
    /// moves on). See the README for what is ordered and what is not.
    #[must_use]
    pub fn ordered(mut self, partitions: u16) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// How a failed handler is retried. Default [`default_event_retry`].
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How long one handler call may take before it is cancelled (and retried). Default none.
    #[must_use]
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// When the service is new (its queue does not exist yet), first handles the events the
    /// stream `lepus.events.log` keeps from `from` on that its patterns match, in stream order,
    /// then goes live: the events published meanwhile wait in its queue, and those the replay
    /// already handled are skipped there by id, so none is missed or handled twice at the
    /// switch. A service that exists ignores it. See the README's *Replay* for retention,
    /// failures and crashes.
    #[must_use]
    pub fn replay(mut self, from: ReplayFrom) -> Self {
        self.replay = Some(from);
        self
    }

    /// The service's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.service
    }

    /// The subscription, checked, as the worker runs it.
    pub(crate) fn into_service(
        mut self,
        delivery_limit: u32,
        replay_from: Option<ReplayFrom>,
    ) -> lepus::Result<Service> {
        self.replay = self.replay.or(replay_from);
        let topology = ServiceTopology::new(&self.service, self.patterns, self.partitions, delivery_limit)?;
        let name: Arc<str> = self.service.into();
        let mut registry = Registry::default();
        for handler in self.handlers {
            let registered = Registered {
                name: handler.name.into(),
                handler: handler.handler,
                retry: self.retry,
                time_limit: self.time_limit,
                rate_limit: None,
                required_states: handler.required_states,
            };
            registry.add(handler.name, registered);
        }
        Ok(Service { name, registry, topology, replay: self.replay, switch: Switch::default() })
    }
}

/// A service as a worker runs it.
pub(crate) struct Service {
    pub(crate) name: Arc<str>,
    pub(crate) registry: Registry,
    pub(crate) topology: ServiceTopology,
    /// Where a new service's replay starts, if it replays.
    pub(crate) replay: Option<ReplayFrom>,
    /// The events the replay handled that the queue may bring again.
    pub(crate) switch: Switch,
}

impl Service {
    /// Whether the service is ordered (partitions, each event of a partition after the other).
    pub(crate) fn ordered(&self) -> bool {
        self.topology.partitions().is_some()
    }

    /// Whether the service's patterns match event `name` (as the broker routes: the replay's
    /// filter).
    pub(crate) fn matches(&self, name: &str) -> bool {
        self.topology.patterns().iter().any(|pattern| topic::matches(pattern, name))
    }

    /// An event of this service as the task message the jobs' path runs, and its context.
    pub(crate) fn message(&self, envelope: Envelope) -> (TaskMessage, Arc<EventContext>) {
        let name: Arc<str> =
            self.registry.get(&envelope.name).map_or_else(|| envelope.name.as_str().into(), |h| Arc::clone(&h.name));
        let context = Arc::new(EventContext::new(&envelope, name, Arc::clone(&self.name)));
        let Envelope { id, name, body, retries, eta, .. } = envelope;
        let mut message = TaskMessage::new(name, Arguments { args: vec![body], kwargs: serde_json::Map::new() });
        message.id = JobId::from(id.as_str());
        message.root_id = Some(id.to_string());
        message.correlation_id = None;
        message.retries = retries;
        message.eta = eta;
        (message, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workers_replay_start_applies_to_the_subscriptions_that_do_not_say() {
        let at = "2026-03-01T12:00:00Z".parse::<ReplayFrom>().expect("a time");
        let plain = Subscription::service("a").pattern("x.*").into_service(5, Some(at)).expect("valid");
        assert_eq!(plain.replay, Some(at));
        let own = Subscription::service("b").pattern("x.*").replay(ReplayFrom::First);
        assert_eq!(own.into_service(5, Some(at)).expect("valid").replay, Some(ReplayFrom::First));
        let none = Subscription::service("c").pattern("x.*").into_service(5, None).expect("valid");
        assert_eq!(none.replay, None);
    }
}
