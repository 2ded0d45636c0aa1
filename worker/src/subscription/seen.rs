//! [`Seen`]: the event ids a process handled lately, to make a handler idempotent over a window.

use lepus::EventId;
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The ids of the events handled in this process during the last `window`: a handler asks
/// [`Seen::first_time`] (or runs its work through [`Seen::once`]) and skips an event it has
/// already handled. Share one per service as worker state (`State<Arc<Seen>>`).
///
/// It covers the redeliveries that at-least-once leaves to this process: an event delivered
/// again after its ack was lost (a cut connection, a worker restart between the handler and the
/// ack lands elsewhere), a publisher that republished an event with its id. It does not cover:
/// another process of the same service (each has its own set: a redelivery may go to another
/// process), a restart of this one (the set is in memory), or a duplicate older than `window`.
/// For those, make the handler's effect idempotent where it lands (a unique key in the database
/// the handler writes to, keyed by the event id). Memory: one entry per event of the window.
///
/// ```
/// # use lepus::EventId;
/// let seen = lepus_worker::Seen::new(std::time::Duration::from_secs(600));
/// let id = EventId::from("e-1");
/// assert!(seen.first_time(&id));
/// assert!(!seen.first_time(&id));
/// ```
#[derive(Debug)]
pub struct Seen {
    window: Duration,
    ids: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    when: HashMap<EventId, Instant>,
    order: VecDeque<(Instant, EventId)>,
}

impl Seen {
    /// Remembers ids for `window`.
    #[must_use]
    pub fn new(window: Duration) -> Self {
        Self { window, ids: Mutex::default() }
    }

    /// Whether `id` is new in the window; it is remembered from now on.
    pub fn first_time(&self, id: &EventId) -> bool {
        let now = Instant::now();
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((at, old)) = ids.order.front().cloned() {
            if now.duration_since(at) < self.window {
                break;
            }
            ids.order.pop_front();
            if ids.when.get(&old) == Some(&at) {
                ids.when.remove(&old);
            }
        }
        if ids.when.contains_key(id) {
            return false;
        }
        ids.when.insert(id.clone(), now);
        ids.order.push_back((now, id.clone()));
        true
    }

    /// Forgets `id`: its next delivery is new again (a failed attempt, to be retried).
    pub fn forget(&self, id: &EventId) {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner).when.remove(id);
    }

    /// Runs `work` unless `id` was seen in the window: `Ok(true)` if it ran and succeeded,
    /// `Ok(false)` for a duplicate; a failure forgets `id`, so that the retry runs it.
    pub async fn once<E>(&self, id: &EventId, work: impl Future<Output = Result<(), E>>) -> Result<bool, E> {
        if !self.first_time(id) {
            return Ok(false);
        }
        match work.await {
            Ok(()) => Ok(true),
            Err(e) => {
                self.forget(id);
                Err(e)
            }
        }
    }

    /// How many ids are remembered now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner).when.len()
    }

    /// Whether none is.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_new_again_after_the_window_or_once_forgotten() {
        let seen = Seen::new(Duration::from_millis(50));
        let (a, b) = (EventId::from("a"), EventId::from("b"));
        assert!(seen.first_time(&a));
        assert!(!seen.first_time(&a));
        seen.forget(&a);
        assert!(seen.first_time(&a));
        std::thread::sleep(Duration::from_millis(60));
        assert!(seen.first_time(&b), "pruning a");
        assert_eq!(seen.len(), 1);
        assert!(seen.first_time(&a));
    }
}
