//! [`Revoked`]: the ids of revoked jobs a worker remembers, bounded as a Celery worker bounds
//! them: at most [`MAX_REVOKED`] ids, each for [`REVOKE_EXPIRES`] after it was revoked; the
//! oldest go first. A job whose id is here is not run when it arrives (see `execute::admit`).
//!
//! Workers learn revokes from the broadcast (`revoke`, Celery's remote control) and, when they
//! start, from the workers already running (Celery's `hello`). A revoke sent while no worker runs
//! reaches nobody, as with Celery.

use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The most revoked ids remembered (Celery's `REVOKES_MAX`).
pub const MAX_REVOKED: usize = 50_000;

/// How long a revoked id is remembered (Celery's `REVOKE_EXPIRES`, 3 hours).
pub const REVOKE_EXPIRES: Duration = Duration::from_secs(3 * 3600);

/// Revoked job ids, with the Unix time each was revoked.
#[derive(Debug, Default)]
pub(crate) struct Revoked {
    ids: Mutex<Ids>,
    /// Whether any id is held: the check of every job skips the lock while none is.
    any: AtomicBool,
}

#[derive(Debug, Default)]
struct Ids {
    at: HashMap<String, f64>,
    order: VecDeque<(String, f64)>,
}

impl Revoked {
    /// Remembers `id` as revoked at Unix time `at`.
    pub(crate) fn insert(&self, id: &str, at: f64) {
        let mut ids = self.lock();
        if ids.at.insert(id.to_owned(), at).is_none() {
            ids.order.push_back((id.to_owned(), at));
        }
        ids.purge(at);
        self.any.store(!ids.at.is_empty(), Ordering::Release);
    }

    /// Whether `id` was revoked (and not so long ago that it was forgotten), at Unix time `now`.
    pub(crate) fn contains(&self, id: &str, now: f64) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        self.lock().at.get(id).is_some_and(|at| now - at < REVOKE_EXPIRES.as_secs_f64())
    }

    /// The ids held and when each was revoked, as `hello` sends them: `{id: time}`.
    pub(crate) fn snapshot(&self, now: f64) -> Map<String, Value> {
        let mut ids = self.lock();
        ids.purge(now);
        ids.at.iter().map(|(id, at)| (id.clone(), Value::from(*at))).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ids> {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Ids {
    /// Forgets ids past their time, then the oldest beyond the limit.
    fn purge(&mut self, now: f64) {
        while let Some((id, at)) = self.order.front().cloned() {
            let stale = now - at >= REVOKE_EXPIRES.as_secs_f64();
            if !stale && self.order.len() <= MAX_REVOKED {
                break;
            }
            self.order.pop_front();
            if self.at.get(&id) == Some(&at) {
                self.at.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_forgotten_after_three_hours_and_beyond_the_limit_oldest_first() {
        let revoked = Revoked::default();
        assert!(!revoked.contains("a", 0.0));
        revoked.insert("a", 100.0);
        assert!(revoked.contains("a", 101.0));
        assert!(!revoked.contains("a", 100.0 + REVOKE_EXPIRES.as_secs_f64()), "expired");
        for i in 0..MAX_REVOKED + 10 {
            revoked.insert(&i.to_string(), 200.0 + i as f64 * 1e-3);
        }
        let now = 300.0;
        assert_eq!(revoked.snapshot(now).len(), MAX_REVOKED);
        assert!(!revoked.contains("0", now), "the oldest went first");
        assert!(revoked.contains(&(MAX_REVOKED + 9).to_string(), now));
    }
}
