//! [`Panel`]: the remote-control commands a Lepus worker answers, with the replies a Celery
//! worker gives, so that `celery inspect`, `celery control` and Flower work unchanged. A command
//! a Lepus worker cannot honour gets `{"error": …}` saying so.
//!
//! | command | reply |
//! |---|---|
//! | `ping` | `{"ok": "pong"}` |
//! | `stats` | totals by job, pid, clock, uptime, pool, broker, prefetch, rusage |
//! | `active` | the running jobs (`id`, `name`, `args`, `kwargs`, `time_start`, `delivery_info`, …) |
//! | `reserved`, `scheduled` | `[]`: a Lepus worker holds no job it has not started, and delayed jobs wait in the broker |
//! | `registered` | the job names |
//! | `active_queues` | the queues consumed, as kombu describes queues |
//! | `revoke` | remembers the ids (see `revoked`); with `terminate`, stops them if they run here |
//! | `revoked`, `query_task`, `clock`, `conf`, `hello`, `heartbeat` | as Celery |
//! | `enable_events`, `disable_events` | events on or off (see `events`) |
//! | `add_consumer`, `cancel_consumer` | consume a queue more, or no longer |
//! | `shutdown` | a graceful stop (running jobs finish within the grace period), exit 0 |
//! | anything else (`revoke_by_stamped_headers`, `rate_limit`, `pool_grow`, …) | an error naming why |

use crate::activity::Activity;
use crate::events::Events;
use crate::queues::QueueSet;
use crate::revoked::Revoked;
use lepus::protocol::control::{ok, refused};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_util::sync::CancellationToken;

/// What the commands read and change.
#[derive(Debug)]
pub(crate) struct Panel {
    pub(crate) node: Arc<str>,
    pub(crate) jobs: Vec<&'static str>,
    pub(crate) activity: Arc<Activity>,
    pub(crate) revoked: Arc<Revoked>,
    pub(crate) events: Arc<Events>,
    pub(crate) queues: Arc<QueueSet>,
    pub(crate) concurrency: u16,
    /// The broker as `stats` shows it (no password).
    pub(crate) broker: Value,
    /// The worker's stop: `shutdown` cancels it.
    pub(crate) stop: CancellationToken,
    /// The worker's Lamport clock.
    pub(crate) clock: Arc<AtomicU64>,
}

impl Panel {
    /// The reply to `method` with `arguments`.
    pub(crate) fn handle(&self, method: &str, arguments: &Map<String, Value>) -> Value {
        let now = lepus::control::unix_now();
        match method {
            "ping" => ok("pong"),
            "stats" => self.stats(),
            "active" | "dump_active" => Value::from(self.activity.active(&self.node)),
            "reserved" | "dump_reserved" | "scheduled" | "dump_schedule" => json!([]),
            "registered" | "dump_tasks" => json!(self.jobs),
            "active_queues" => Value::from(self.active_queues()),
            "revoke" => self.revoke(arguments, now),
            "terminate" => {
                let mut arguments = arguments.clone();
                arguments.insert("terminate".into(), Value::Bool(true));
                self.revoke(&arguments, now)
            }
            "revoked" | "dump_revoked" => Value::from(self.revoked.snapshot(now).keys().cloned().collect::<Vec<_>>()),
            "query_task" => self.query_task(arguments),
            "clock" => json!({ "clock": self.clock.load(Ordering::Relaxed) }),
            "conf" | "dump_conf" => json!({
                "worker_concurrency": self.concurrency,
                "task_queues": self.queues.list().iter().map(|q| q.name().to_owned()).collect::<Vec<_>>(),
                "worker_send_task_events": self.events.is_on(),
                "lepus_version": env!("CARGO_PKG_VERSION"),
            }),
            "hello" => self.hello(arguments, now),
            "heartbeat" => {
                self.events.heartbeat(&self.activity);
                ok("heartbeat sent")
            }
            "enable_events" => ok(if self.events.switch(true, &self.activity) {
                "task events enabled"
            } else {
                "task events already enabled"
            }),
            "disable_events" => ok(if self.events.switch(false, &self.activity) {
                "task events disabled"
            } else {
                "task events already disabled"
            }),
            "add_consumer" => match arguments.get("queue").and_then(Value::as_str) {
                None => refused("add_consumer needs a queue"),
                Some(queue) => match self.queues.add(queue) {
                    Ok(true) => ok(format!("add consumer {queue}")),
                    Ok(false) => ok(format!("already consuming from {queue}")),
                    Err(e) => refused(e),
                },
            },
            "cancel_consumer" => match arguments.get("queue").and_then(Value::as_str) {
                None => refused("cancel_consumer needs a queue"),
                Some(queue) if self.queues.cancel(queue) => ok(format!("no longer consuming from {queue}")),
                Some(queue) => refused(format!("not consuming from {queue}")),
            },
            "shutdown" => {
                tracing::warn!("shutdown asked by remote control");
                self.stop.cancel();
                ok("shutting down: running jobs finish, then the worker exits")
            }
            "revoke_by_stamped_headers" => {
                refused("a Lepus worker does not read Celery's stamped headers: revoke jobs by id (revoke)")
            }
            "rate_limit" | "time_limit" => refused(format!(
                "{method} is not supported by a Lepus worker: set it per job type in code, or per request"
            )),
            "pool_grow" | "pool_shrink" | "pool_restart" | "autoscale" => refused(format!(
                "{method} is not supported by a Lepus worker: it has no process pool; its concurrency is \
                 set at start-up (--concurrency); start more workers to scale out"
            )),
            other => refused(format!("a Lepus worker does not know the command {other:?}")),
        }
    }

    fn stats(&self) -> Value {
        let queues = self.queues.list().len();
        json!({
            "total": self.activity.totals(),
            "pid": std::process::id(),
            "clock": self.clock.load(Ordering::Relaxed).to_string(),
            "uptime": self.activity.uptime(),
            "pool": {
                "implementation": "lepus (tokio tasks)",
                "max-concurrency": self.concurrency,
                "processes": [std::process::id()],
                "max-tasks-per-child": "N/A",
                "put-guarded-by-semaphore": false,
                "timeouts": [0, 0],
            },
            "broker": self.broker,
            "prefetch_count": usize::from(self.concurrency) * queues,
            "rusage": rusage(),
        })
    }

    fn active_queues(&self) -> Vec<Value> {
        self.queues
            .list()
            .iter()
            .map(|queue| {
                json!({
                    "name": queue.name(),
                    "exchange": {"name": "", "type": "direct", "arguments": null, "durable": true, "passive": false,
                                 "auto_delete": false, "delivery_mode": null, "no_declare": false},
                    "routing_key": queue.name(),
                    "queue_arguments": lepus::internal::json_from_table(&queue.arguments()),
                    "binding_arguments": null, "consumer_arguments": null,
                    "durable": true, "exclusive": false, "auto_delete": false, "no_ack": false,
                    "alias": null, "bindings": [], "no_declare": null, "expires": null, "message_ttl": null,
                    "max_length": null, "max_length_bytes": null, "max_priority": null,
                })
            })
            .collect()
    }

    /// Remembers the ids (`task_id`: one or a list) as revoked; with `terminate`, also stops those
    /// running here.
    fn revoke(&self, arguments: &Map<String, Value>, now: f64) -> Value {
        let ids = ids(arguments.get("task_id"));
        if ids.is_empty() {
            return refused("revoke needs a task_id");
        }
        for id in &ids {
            self.revoked.insert(id, now);
        }
        tracing::info!(ids = ?ids, "jobs revoked");
        if arguments.get("terminate").and_then(Value::as_bool).unwrap_or(false) {
            let terminated: Vec<&String> = ids.iter().filter(|id| self.activity.terminate(id)).collect();
            if terminated.is_empty() {
                return ok("terminate: tasks unknown");
            }
            let list: Vec<&str> = terminated.iter().map(|id| id.as_str()).collect();
            return ok(format!("terminate: {}", list.join(", ")));
        }
        let shown: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
        ok(format!("tasks {{{}}} flagged as revoked", shown.join(", ")))
    }

    fn query_task(&self, arguments: &Map<String, Value>) -> Value {
        let wanted = ids(arguments.get("ids"));
        let found: Map<String, Value> = self
            .activity
            .active(&self.node)
            .into_iter()
            .filter_map(|info| {
                let id = info["id"].as_str()?.to_owned();
                wanted.contains(&id).then(|| (id, json!(["active", info])))
            })
            .collect();
        Value::Object(found)
    }

    /// Another node starting (Celery's mingle) sends its revoked ids and asks for ours.
    fn hello(&self, arguments: &Map<String, Value>, now: f64) -> Value {
        if arguments.get("from_node").and_then(Value::as_str) == Some(&*self.node) {
            return Value::Null;
        }
        if let Some(Value::Object(theirs)) = arguments.get("revoked") {
            for (id, at) in theirs {
                self.revoked.insert(id, at.as_f64().unwrap_or(now));
            }
        }
        json!({ "revoked": self.revoked.snapshot(now), "clock": self.clock.load(Ordering::Relaxed) })
    }
}

/// Job ids given as one string or a list.
fn ids(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(id)) => vec![id.clone()],
        Some(Value::Array(ids)) => ids.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// This process's CPU times (seconds) and peak memory (KiB), from `/proc` (Linux); `"N/A"`
/// elsewhere.
fn rusage() -> Value {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let seconds = |index: usize| fields.get(index).and_then(|f| f.parse::<f64>().ok()).map(|ticks| ticks / 100.0);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let maxrss = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    match (seconds(11), seconds(12), maxrss) {
        (Some(utime), Some(stime), Some(maxrss)) => json!({ "utime": utime, "stime": stime, "maxrss": maxrss }),
        _ => Value::from("N/A"),
    }
}
