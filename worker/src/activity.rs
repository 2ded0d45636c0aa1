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
    running: Mutex<HashMap<JobId, Active>>,
    /// Jobs processed by name (registered names only).
    totals: HashMap<String, AtomicU64>,
    processed: AtomicU64,
    since: Instant,
}

#[derive(Debug)]
struct Active {
    info: Value,
    cancel: CancellationToken,
}

/// A job registered as running until this is dropped; its token is cancelled by a `revoke`
/// with `terminate`.
#[derive(Debug)]
pub(crate) struct Running {
    activity: Arc<Activity>,
    id: JobId,
    /// Cancelled to terminate the job.
    pub(crate) cancel: CancellationToken,
}

impl Activity {
    pub(crate) fn new(names: &[&str]) -> Self {
        let totals = names.iter().map(|name| ((*name).to_owned(), AtomicU64::new(0))).collect();
        Self { running: Mutex::default(), totals, processed: AtomicU64::new(0), since: Instant::now() }
    }

    /// Registers `message`, from `queue`, as running on node `hostname`.
    pub(crate) fn start(
        self: &Arc<Self>,
        message: &TaskMessage,
        queue: &str,
        hostname: &str,
        redelivered: bool,
    ) -> Running {
        let info = json!({
            "id": message.id.as_str(),
            "name": message.task,
            "args": message.arguments.args,
            "kwargs": message.arguments.kwargs,
            "type": message.task,
            "hostname": hostname,
            "time_start": lepus::control::unix_now(),
            "acknowledged": false,
            "delivery_info": {"exchange": "", "routing_key": queue, "priority": 0, "redelivered": redelivered},
            "worker_pid": std::process::id(),
        });
        let cancel = CancellationToken::new();
        self.lock().insert(message.id.clone(), Active { info, cancel: cancel.clone() });
        Running { activity: Arc::clone(self), id: message.id.clone(), cancel }
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
        let found = running.iter().find(|(job, _)| job.as_str() == id);
        found.inspect(|(_, active)| active.cancel.cancel()).is_some()
    }

    /// The running jobs as Celery's `inspect active` shows them.
    pub(crate) fn active(&self) -> Vec<Value> {
        self.lock().values().map(|active| active.info.clone()).collect()
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Active>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.activity.lock().remove(&self.id);
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
        let running = activity.start(&message, "q", "lepus@h-1", false);
        let active = activity.active();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0]["name"], "demo.add");
        assert_eq!(active[0]["args"], json!([1, 2]));
        assert_eq!(active[0]["delivery_info"]["routing_key"], "q");
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
