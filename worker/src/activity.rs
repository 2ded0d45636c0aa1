//! [`Activity`]: what a worker is running right now, and how many jobs of each name it has
//! processed, for remote control (`active`, `stats`, `revoke` with `terminate`) and for the
//! events' heartbeats. A running job is registered by the [`Running`] guard its delivery holds
//! while its handler runs.

use lepus::JobId;
use lepus::protocol::TaskMessage;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// The jobs running on a worker.
#[derive(Debug)]
pub(crate) struct Activity {
    /// By a number of the worker's own, so that registering a job clones no id for a key.
    running: Mutex<HashMap<u64, Active>>,
    next: AtomicU64,
    /// Jobs processed by name (registered names only).
    totals: HashMap<String, AtomicU64>,
    processed: AtomicU64,
    since: Instant,
}

/// What `inspect active` shows of a running job, kept as it came: the JSON is built only when
/// someone asks.
#[derive(Debug)]
struct Active {
    id: JobId,
    name: String,
    args: Vec<Value>,
    kwargs: Map<String, Value>,
    queue: String,
    redelivered: bool,
    time_start: f64,
    cancel: CancellationToken,
}

impl Active {
    fn to_json(&self, hostname: &str) -> Value {
        json!({
            "id": self.id.as_str(),
            "name": self.name,
            "args": self.args,
            "kwargs": self.kwargs,
            "type": self.name,
            "hostname": hostname,
            "time_start": self.time_start,
            "acknowledged": false,
            "delivery_info": {"exchange": "", "routing_key": self.queue, "priority": 0, "redelivered": self.redelivered},
            "worker_pid": std::process::id(),
        })
    }
}

/// A job registered as running until this is dropped; its token is cancelled by a `revoke`
/// with `terminate`.
#[derive(Debug)]
pub(crate) struct Running {
    activity: Arc<Activity>,
    key: u64,
    /// Cancelled to terminate the job.
    pub(crate) cancel: CancellationToken,
}

impl Activity {
    pub(crate) fn new(names: &[&str]) -> Self {
        let totals = names.iter().map(|name| ((*name).to_owned(), AtomicU64::new(0))).collect();
        Self {
            running: Mutex::default(),
            next: AtomicU64::new(0),
            totals,
            processed: AtomicU64::new(0),
            since: Instant::now(),
        }
    }

    /// Registers `message`, from `queue`, as running.
    pub(crate) fn start(self: &Arc<Self>, message: &TaskMessage, queue: &str, redelivered: bool) -> Running {
        let cancel = CancellationToken::new();
        let active = Active {
            id: message.id.clone(),
            name: message.task.clone(),
            args: message.arguments.args.clone(),
            kwargs: message.arguments.kwargs.clone(),
            queue: queue.to_owned(),
            redelivered,
            time_start: lepus::control::unix_now(),
            cancel: cancel.clone(),
        };
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(key, active);
        Running { activity: Arc::clone(self), key, cancel }
    }

    /// Counts a finished job of `name`.
    pub(crate) fn processed(&self, name: &str) {
        self.processed.fetch_add(1, Ordering::Relaxed);
        if let Some(total) = self.totals.get(name) {
            total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Cancels the running job `id`; whether it was running here.
    pub(crate) fn terminate(&self, id: &str) -> bool {
        let running = self.lock();
        let found = running.values().find(|active| active.id.as_str() == id);
        found.inspect(|active| active.cancel.cancel()).is_some()
    }

    /// The running jobs as Celery's `inspect active` shows them, on node `hostname`.
    pub(crate) fn active(&self, hostname: &str) -> Vec<Value> {
        self.lock().values().map(|active| active.to_json(hostname)).collect()
    }

    /// How many jobs run now.
    pub(crate) fn running(&self) -> usize {
        self.lock().len()
    }

    /// Jobs finished since the start.
    pub(crate) fn processed_total(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    /// Jobs finished by name, as `stats` shows them (names with none left out).
    pub(crate) fn totals(&self) -> Map<String, Value> {
        self.totals
            .iter()
            .map(|(name, total)| (name, total.load(Ordering::Relaxed)))
            .filter(|(_, total)| *total > 0)
            .map(|(name, total)| (name.clone(), Value::from(total)))
            .collect()
    }

    /// Seconds since the worker started.
    pub(crate) fn uptime(&self) -> u64 {
        self.since.elapsed().as_secs()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Active>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.activity.lock().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lepus::protocol::Arguments;

    #[test]
    fn a_running_job_is_listed_until_its_guard_goes_and_can_be_terminated() {
        let activity = Arc::new(Activity::new(&["demo.add"]));
        let message = TaskMessage::new("demo.add", Arguments { args: vec![json!(1), json!(2)], kwargs: Map::new() });
        let running = activity.start(&message, "q", false);
        let active = activity.active("lepus@h-1");
        assert_eq!(active.len(), 1);
        assert_eq!(active[0]["name"], "demo.add");
        assert_eq!(active[0]["args"], json!([1, 2]));
        assert_eq!(active[0]["delivery_info"]["routing_key"], "q");
        assert_eq!(active[0]["hostname"], "lepus@h-1");
        assert_eq!(active[0]["id"], message.id.as_str());
        assert!(activity.terminate(message.id.as_str()));
        assert!(running.cancel.is_cancelled());
        assert!(!activity.terminate("someone-else"));
        drop(running);
        activity.processed("demo.add");
        activity.processed("not.registered");
        assert_eq!(activity.running(), 0);
        assert_eq!(activity.processed_total(), 2);
        assert_eq!(activity.totals(), Map::from_iter([("demo.add".to_owned(), json!(1))]));
    }
}
