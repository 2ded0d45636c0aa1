//! [`Health`]: whether the worker does its work, for `/readyz` and `lepus_broker_connected`: it
//! is ready while it consumes every one of its queues and has not been told to stop.
//!
//! Each consume loop holds a [`Consuming`] guard for its queue while it runs; the guard's drop
//! (the consumer was lost, or cancelled at a stop) marks the queue as not consumed at once. A
//! queue given up on purpose (`cancel_consumer`) is released instead, and no longer counts.

use lepus::internal::endpoint::Readiness;
use metrics::Gauge;
use std::sync::{Arc, Mutex, PoisonError};
use tokio_util::sync::CancellationToken;

/// Which queues are consumed right now.
pub(crate) struct Health {
    queues: Mutex<Vec<(String, bool)>>,
    stop: CancellationToken,
    connected: Gauge,
}

/// Marks a queue as consumed until dropped.
pub(crate) struct Consuming {
    health: Arc<Health>,
    /// `None` once released.
    queue: Option<String>,
}

impl Health {
    pub(crate) fn new<'a>(
        queues: impl IntoIterator<Item = &'a str>,
        stop: CancellationToken,
        connected: Gauge,
    ) -> Self {
        let queues = queues.into_iter().map(|name| (name.to_owned(), false)).collect();
        connected.set(0.0);
        Self { queues: Mutex::new(queues), stop, connected }
    }

    /// Marks `queue` as consumed while the guard lives (a queue added later counts from now).
    pub(crate) fn consuming(self: &Arc<Self>, queue: &str) -> Consuming {
        self.set(queue, Some(true));
        Consuming { health: Arc::clone(self), queue: Some(queue.to_owned()) }
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
        let queues = self.lock();
        let idle: Vec<&str> = queues.iter().filter(|(_, on)| !on).map(|(name, _)| name.as_str()).collect();
        if idle.is_empty() {
            Ok(())
        } else {
            Err(format!("not consuming {} (connecting to the broker)", idle.join(", ")))
        }
    }

    /// Marks `queue` consumed (`Some(true)`), not consumed (`Some(false)`) or no longer wanted
    /// (`None`).
    fn set(&self, queue: &str, on: Option<bool>) {
        let mut queues = self.lock();
        match (queues.iter().position(|(name, _)| name == queue), on) {
            (Some(index), Some(on)) => queues[index].1 = on,
            (None, Some(on)) => queues.push((queue.to_owned(), on)),
            (Some(index), None) => drop(queues.remove(index)),
            (None, None) => {}
        }
        let all = queues.iter().all(|(_, on)| *on);
        self.connected.set(if all { 1.0 } else { 0.0 });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, bool)>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Consuming {
    /// The queue is given up on purpose: it no longer counts for readiness.
    pub(crate) fn release(mut self) {
        if let Some(queue) = self.queue.take() {
            self.health.set(&queue, None);
        }
    }
}

impl Drop for Consuming {
    fn drop(&mut self) {
        if let Some(queue) = &self.queue {
            self.health.set(queue, Some(false));
        }
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
        let a = health.consuming("a");
        let c = health.consuming("c");
        c.release();
        assert_eq!(health.ready(), Ok(()), "a queue given up on purpose no longer counts");
        drop(a);
        let _a = health.consuming("a");
        stop.cancel();
        assert!(health.ready().expect_err("stopping").starts_with("stopping"));
        drop(b);
    }
}
