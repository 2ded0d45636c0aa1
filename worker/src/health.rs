//! [`Health`]: whether the worker does its work, for `/readyz` and `lepus_broker_connected`: it
//! is ready while it consumes every one of its queues and has not been told to stop.
//!
//! Each consume loop holds a [`Consuming`] guard for its queue while it runs; the guard's drop
//! (the consumer was lost, or cancelled at a stop) marks the queue as not consumed at once.

use lepus::internal::endpoint::Readiness;
use metrics::Gauge;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;

/// Which queues are consumed right now.
pub(crate) struct Health {
    queues: Vec<(String, AtomicBool)>,
    stop: CancellationToken,
    connected: Gauge,
}

/// Marks a queue as consumed until dropped.
pub(crate) struct Consuming {
    health: Arc<Health>,
    index: usize,
}

impl Health {
    pub(crate) fn new<'a>(
        queues: impl IntoIterator<Item = &'a str>,
        stop: CancellationToken,
        connected: Gauge,
    ) -> Self {
        let queues = queues.into_iter().map(|name| (name.to_owned(), AtomicBool::new(false))).collect();
        connected.set(0.0);
        Self { queues, stop, connected }
    }

    /// Marks `queue` as consumed while the guard lives.
    pub(crate) fn consuming(self: &Arc<Self>, queue: &str) -> Consuming {
        let index = self.queues.iter().position(|(name, _)| name == queue).unwrap_or(usize::MAX);
        self.set(index, true);
        Consuming { health: Arc::clone(self), index }
    }

    /// What `/readyz` asks.
    pub(crate) fn readiness(self: &Arc<Self>) -> Readiness {
        let health = Arc::clone(self);
        Arc::new(move || health.ready())
    }

    /// `Ok` while every queue is consumed and no stop was asked for; else why not.
    pub(crate) fn ready(&self) -> Result<(), String> {
        if self.stop.is_cancelled() {
            return Err("stopping: running jobs are finishing and nothing new is taken".to_owned());
        }
        let idle: Vec<&str> =
            self.queues.iter().filter(|(_, on)| !on.load(Ordering::Acquire)).map(|(name, _)| name.as_str()).collect();
        if idle.is_empty() {
            Ok(())
        } else {
            Err(format!("not consuming {} (connecting to the broker)", idle.join(", ")))
        }
    }

    fn set(&self, index: usize, on: bool) {
        if let Some((_, flag)) = self.queues.get(index) {
            flag.store(on, Ordering::Release);
        }
        let all = self.queues.iter().all(|(_, on)| on.load(Ordering::Acquire));
        self.connected.set(if all { 1.0 } else { 0.0 });
    }
}

impl Drop for Consuming {
    fn drop(&mut self) {
        self.health.set(self.index, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_while_every_queue_is_consumed_and_not_once_stopping() {
        let stop = CancellationToken::new();
        let health = Arc::new(Health::new(["a", "b"], stop.clone(), Gauge::noop()));
        assert_eq!(health.ready(), Err("not consuming a, b (connecting to the broker)".to_owned()));
        let a = health.consuming("a");
        let b = health.consuming("b");
        assert_eq!(health.ready(), Ok(()));
        drop(a);
        assert_eq!(health.ready(), Err("not consuming a (connecting to the broker)".to_owned()));
        let _a = health.consuming("a");
        stop.cancel();
        assert!(health.ready().expect_err("stopping").starts_with("stopping"));
        drop(b);
    }
}
