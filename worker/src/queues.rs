//! [`QueueSet`]: the queues a worker consumes, which remote control may change while it runs
//! (`add_consumer`, `cancel_consumer`). The worker's supervisor starts and stops consume loops
//! as the set tells it ([`Change`]); after a reconnect it consumes the set as it stands.

use lepus::WorkQueue;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;

/// A change to the queues consumed.
#[derive(Debug)]
pub(crate) enum Change {
    /// Start consuming this queue (declared first).
    Add(Arc<WorkQueue>),
    /// Stop consuming the queue of this name; its running jobs finish.
    Cancel(String),
}

/// The queues a worker consumes.
#[derive(Debug)]
pub(crate) struct QueueSet {
    queues: Mutex<Vec<Arc<WorkQueue>>>,
    delivery_limit: u32,
    /// Whether each queue is consumed with its priority tiers, whose names must be valid too.
    tiers: bool,
    changes: mpsc::UnboundedSender<Change>,
}

impl QueueSet {
    /// The set `queues`, and the receiving end of its changes.
    pub(crate) fn new(queues: Vec<Arc<WorkQueue>>, delivery_limit: u32) -> (Self, mpsc::UnboundedReceiver<Change>) {
        let (changes, receiver) = mpsc::unbounded_channel();
        (Self { queues: Mutex::new(queues), delivery_limit, tiers: false, changes }, receiver)
    }

    /// The same set, whose queues are consumed with their priority tiers if `on`.
    #[must_use]
    pub(crate) fn with_tiers(mut self, on: bool) -> Self {
        self.tiers = on;
        self
    }

    /// The queues consumed now.
    pub(crate) fn list(&self) -> Vec<Arc<WorkQueue>> {
        self.lock().clone()
    }

    /// Starts consuming `name` (with the worker's delivery limit); `Ok(false)` if it is consumed
    /// already, `Err` for a name that is not a queue name.
    pub(crate) fn add(&self, name: &str) -> Result<bool, String> {
        let queue = Arc::new(WorkQueue::new(name).map_err(|e| e.to_string())?.with_delivery_limit(self.delivery_limit));
        if self.tiers {
            lepus::internal::topology::tier_queues(&queue).map_err(|e| format!("{e} (a priority tier of {name:?})"))?;
        }
        let mut queues = self.lock();
        if queues.iter().any(|q| q.name() == name) {
            return Ok(false);
        }
        queues.push(Arc::clone(&queue));
        drop(self.changes.send(Change::Add(queue)));
        Ok(true)
    }

    /// Stops consuming `name`; whether it was consumed.
    pub(crate) fn cancel(&self, name: &str) -> bool {
        let mut queues = self.lock();
        let before = queues.len();
        queues.retain(|q| q.name() != name);
        let cancelled = queues.len() < before;
        if cancelled {
            drop(self.changes.send(Change::Cancel(name.to_owned())));
        }
        cancelled
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<WorkQueue>>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_and_cancelling_change_the_set_and_say_so() {
        let first = Arc::new(WorkQueue::new("a").expect("valid"));
        let (set, mut changes) = QueueSet::new(vec![first], 3);
        assert_eq!(set.add("b"), Ok(true));
        assert_eq!(set.add("a"), Ok(false));
        assert!(set.add("amq.bad").is_err());
        assert!(set.cancel("a"));
        assert!(!set.cancel("zzz"));
        assert_eq!(set.list().iter().map(|q| q.name().to_owned()).collect::<Vec<_>>(), ["b"]);
        assert!(matches!(changes.try_recv(), Ok(Change::Add(q)) if q.name() == "b" && q.delivery_limit() == 3));
        assert!(matches!(changes.try_recv(), Ok(Change::Cancel(name)) if name == "a"));
    }

    #[test]
    fn with_tiers_a_queue_whose_tiers_cannot_be_named_is_refused() {
        let (set, _changes) = QueueSet::new(Vec::new(), 3);
        let set = set.with_tiers(true);
        let long = "q".repeat(188);
        assert!(set.add(&long).is_err_and(|e| e.contains("priority tier")));
        assert_eq!(set.add("images"), Ok(true));
        assert_eq!(set.list().len(), 1);
    }
}
