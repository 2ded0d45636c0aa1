//! [`Schedule`]: a named cron rule that enqueues a job (or a batch of jobs) at each tick, and
//! what to do with ticks missed while no scheduler ran ([`Misfire`]).

use crate::cron::{CronError, CronExpr};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use chrono_tz::Tz;
use lepus::Batch;
use lepus::DEFAULT_QUEUE;
use lepus::internal::PreparedBatch;
use lepus::internal::topology::{validate_name, validate_queue_name};
use lepus::protocol::{Arguments, TaskMessage};
use lepus::{Request, RetryPolicy};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

/// What to do with ticks that passed while no scheduler was running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Misfire {
    /// Run none of them; wait for the next tick (the default).
    #[default]
    Skip,
    /// Run one catch-up now, for the latest missed tick.
    Once,
    /// Run every missed tick, oldest first, up to [`MAX_CATCH_UP`].
    All,
}

/// What a leader tells of each of its schedules when it announces itself, so that any process
/// can show them (`lepus schedules`) without the schedule file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleInfo {
    /// The schedule's name.
    pub name: String,
    /// Its cron expression.
    pub cron: String,
    /// The IANA time zone it is read in.
    pub timezone: String,
    /// The job it enqueues.
    pub job: String,
    /// The queue it enqueues to.
    pub queue: String,
    /// Its misfire policy.
    pub misfire: Misfire,
}

impl ScheduleInfo {
    /// The schedule again, enough to compute its ticks.
    pub fn schedule(&self) -> Result<Schedule, ScheduleError> {
        Schedule::new(&self.name, &self.cron, &self.job)?.timezone(&self.timezone)
    }
}

impl Misfire {
    /// The policy's name, as in schedule files: `skip`, `once` or `all`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Misfire::Skip => "skip",
            Misfire::Once => "once",
            Misfire::All => "all",
        }
    }
}

/// Why a schedule could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The schedule's name, or a queue name, is not acceptable.
    #[error(transparent)]
    Name(lepus::Error),
    /// The job name is empty.
    #[error("the job name is empty")]
    EmptyJob,
    /// The cron expression does not parse.
    #[error("invalid cron expression {expression:?}: {source}")]
    Cron {
        /// The expression as given.
        expression: String,
        /// Why it does not parse.
        source: CronError,
    },
    /// The time zone is not an IANA name.
    #[error("unknown time zone {0:?} (use an IANA name like Europe/Paris)")]
    TimeZone(String),
}

/// The most missed ticks one schedule catches up on at once with [`Misfire::All`].
pub const MAX_CATCH_UP: usize = 100;

/// The callback of a schedule that expands into a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleCallback {
    /// Job name.
    pub job: String,
    /// Queue.
    pub queue: String,
    /// Keyword arguments (the batch summary is added as `batch`).
    pub kwargs: Map<String, Value>,
}

/// One schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    name: String,
    cron: CronExpr,
    zone: Tz,
    job: String,
    queue: String,
    arguments: Arguments,
    items: Option<Vec<Value>>,
    callback: Option<ScheduleCallback>,
    expires: Option<Duration>,
    retry: Option<RetryPolicy>,
    misfire: Misfire,
}

impl Schedule {
    /// A schedule named `name` that enqueues `job` with no arguments to the default queue at
    /// each tick of `cron` (UTC). The name and the expression are checked.
    pub fn new(name: &str, cron: &str, job: &str) -> Result<Self, ScheduleError> {
        validate_name("schedule", name).map_err(ScheduleError::Name)?;
        if job.trim().is_empty() {
            return Err(ScheduleError::EmptyJob);
        }
        let cron =
            CronExpr::parse(cron).map_err(|source| ScheduleError::Cron { expression: cron.to_owned(), source })?;
        Ok(Self {
            name: name.to_owned(),
            cron,
            zone: Tz::UTC,
            job: job.to_owned(),
            queue: DEFAULT_QUEUE.to_owned(),
            arguments: Arguments::default(),
            items: None,
            callback: None,
            expires: None,
            retry: None,
            misfire: Misfire::default(),
        })
    }

    /// What a leader announces of this schedule.
    #[must_use]
    pub fn info(&self) -> ScheduleInfo {
        ScheduleInfo {
            name: self.name.clone(),
            cron: self.cron().to_owned(),
            timezone: self.zone.name().to_owned(),
            job: self.job.clone(),
            queue: self.queue.clone(),
            misfire: self.misfire,
        }
    }

    /// Reads the cron expression in IANA time zone `zone` (e.g. `Europe/Paris`).
    pub fn timezone(mut self, zone: &str) -> Result<Self, ScheduleError> {
        self.zone = zone.parse().map_err(|_| ScheduleError::TimeZone(zone.to_owned()))?;
        Ok(self)
    }

    /// Sends the jobs to `queue`.
    pub fn queue(mut self, queue: &str) -> Result<Self, ScheduleError> {
        validate_queue_name(queue).map_err(ScheduleError::Name)?;
        self.queue = queue.to_owned();
        Ok(self)
    }

    /// The jobs' arguments.
    #[must_use]
    pub fn arguments(mut self, arguments: Arguments) -> Self {
        self.arguments = arguments;
        self
    }

    /// Expands each tick into a batch: one job per item. An object item is merged into the
    /// keyword arguments; any other item is appended to the positional arguments.
    #[must_use]
    pub fn items(mut self, items: Vec<Value>) -> Self {
        self.items = Some(items);
        self
    }

    /// With [`Schedule::items`]: the job to enqueue once a tick's batch has finished.
    #[must_use]
    pub fn callback(mut self, callback: ScheduleCallback) -> Self {
        self.callback = Some(callback);
        self
    }

    /// Each job expires `expires` after its tick.
    #[must_use]
    pub fn expires(mut self, expires: Duration) -> Self {
        self.expires = Some(expires);
        self
    }

    /// Retries each job by `policy`.
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// What to do with ticks missed while no scheduler ran.
    #[must_use]
    pub fn misfire(mut self, misfire: Misfire) -> Self {
        self.misfire = misfire;
        self
    }

    /// The schedule's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its misfire policy.
    #[must_use]
    pub fn misfire_policy(&self) -> Misfire {
        self.misfire
    }

    /// The cron expression, as written.
    #[must_use]
    pub fn cron(&self) -> &str {
        self.cron.as_str()
    }

    /// Its time zone.
    #[must_use]
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first tick strictly after `after`.
    #[must_use]
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.next_after(after, self.zone)
    }

    /// The latest tick at or before `until`.
    #[must_use]
    pub fn last_until(&self, until: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.last_until(until, self.zone)
    }

    /// The ticks in `(after, until]`, oldest first, at most `limit`.
    #[must_use]
    pub fn ticks(&self, after: DateTime<Utc>, until: DateTime<Utc>, limit: usize) -> Vec<DateTime<Utc>> {
        let mut ticks = Vec::new();
        let mut at = after;
        while ticks.len() < limit {
            match self.next_after(at).filter(|next| *next <= until) {
                Some(next) => {
                    ticks.push(next);
                    at = next;
                }
                None => break,
            }
        }
        ticks
    }

    /// The deterministic id of the firing at `tick`: `<name>@<tick, UTC>`. A firing repeated
    /// for the same tick carries the same id.
    #[must_use]
    pub fn firing_id(&self, tick: DateTime<Utc>) -> String {
        format!("{}@{}", self.name, tick.to_rfc3339_opts(SecondsFormat::Secs, true))
    }

    /// What the firing at `tick` sends.
    pub fn firing(&self, tick: DateTime<Utc>) -> Result<Firing, lepus::Error> {
        let id = self.firing_id(tick);
        match &self.items {
            None => {
                let request = self.request(self.arguments.clone(), tick).id(id.as_str());
                let (queue, message) = request.into_message(Utc::now())?;
                Ok(Firing::Job { queue: queue.into_owned(), message })
            }
            Some(items) => {
                let mut batch = Batch::new().id(id.as_str());
                for item in items {
                    let mut arguments = self.arguments.clone();
                    match item {
                        Value::Object(fields) => arguments.kwargs.extend(fields.clone()),
                        other => arguments.args.push(other.clone()),
                    }
                    batch = batch.job(self.request(arguments, tick));
                }
                if let Some(callback) = &self.callback {
                    let arguments = Arguments { args: Vec::new(), kwargs: callback.kwargs.clone() };
                    batch =
                        batch.callback(Request::task(callback.job.clone(), arguments).queue(callback.queue.clone()));
                }
                Ok(Firing::Batch(batch.prepare(Utc::now())?))
            }
        }
    }

    /// One job of the firing at `tick`: to the schedule's queue, with its retry policy, expiring
    /// `expires` after the tick.
    fn request(&self, arguments: Arguments, tick: DateTime<Utc>) -> Request {
        let mut request = Request::task(self.job.clone(), arguments).queue(self.queue.clone());
        if let Some(policy) = self.retry {
            request = request.retry(policy);
        }
        if let Some(expires) = self.expires {
            request = request.expires_at(tick + TimeDelta::from_std(expires).unwrap_or(TimeDelta::MAX));
        }
        request
    }
}

/// What one firing sends.
#[derive(Debug)]
pub enum Firing {
    /// One job.
    Job {
        /// Its queue.
        queue: String,
        /// The message.
        message: TaskMessage,
    },
    /// A batch of jobs.
    Batch(PreparedBatch),
}

impl Firing {
    /// The queues the firing sends jobs to, each once (a batch's callback is sent later, by the
    /// batch tracker).
    #[must_use]
    pub fn queues(&self) -> std::collections::BTreeSet<&str> {
        match self {
            Firing::Job { queue, .. } => [queue.as_str()].into(),
            Firing::Batch(batch) => batch.messages.iter().map(|(queue, _)| queue.as_str()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn at(s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, s).single().expect("valid")
    }

    #[test]
    fn ticks_and_firing_ids_are_deterministic() {
        let every_two = Schedule::new("pulse", "*/2 * * * * *", "demo.noop").expect("valid");
        assert_eq!(every_two.ticks(at(0), at(9), 10), [at(2), at(4), at(6), at(8)]);
        assert_eq!(every_two.ticks(at(0), at(9), 2).len(), 2);
        assert_eq!(every_two.firing_id(at(4)), "pulse@2026-11-27T10:00:04Z");
        match every_two.firing(at(4)).expect("a firing") {
            Firing::Job { queue, message } => {
                assert_eq!((queue.as_str(), message.id.as_str()), ("lepus", "pulse@2026-11-27T10:00:04Z"));
                assert!(message.group.is_none());
            }
            Firing::Batch(_) => panic!("not a batch"),
        }
    }

    #[test]
    fn items_expand_into_a_batch_with_a_deterministic_id() {
        let fan_out = Schedule::new("fan", "@hourly", "demo.add")
            .expect("valid")
            .arguments(Arguments { args: vec![], kwargs: json!({"b": 1}).as_object().cloned().unwrap_or_default() })
            .items(vec![json!({"a": 1}), json!({"a": 2})]);
        match fan_out.firing(at(0)).expect("a firing") {
            Firing::Batch(batch) => {
                assert_eq!(batch.id.as_str(), "fan@2026-11-27T10:00:00Z");
                assert_eq!(batch.messages.len(), 2);
                assert_eq!(batch.messages[1].1.arguments.kwargs, *json!({"a": 2, "b": 1}).as_object().expect("object"));
                assert_eq!(batch.messages[1].1.id.as_str(), "fan@2026-11-27T10:00:00Z.1");
            }
            Firing::Job { .. } => panic!("a batch"),
        }
    }

    #[test]
    fn bad_names_zones_and_expressions_are_refused() {
        assert!(matches!(Schedule::new("has space", "@daily", "j"), Err(ScheduleError::Name(_))));
        assert!(matches!(Schedule::new("ok", "not cron", "j"), Err(ScheduleError::Cron { .. })));
        assert!(matches!(Schedule::new("ok", "@daily", ""), Err(ScheduleError::EmptyJob)));
        let zoned = Schedule::new("ok", "@daily", "j").expect("valid").timezone("Mars/Olympus");
        assert!(matches!(zoned, Err(ScheduleError::TimeZone(zone)) if zone == "Mars/Olympus"));
        assert!(Schedule::new("ok", "@daily", "j").expect("valid").timezone("Europe/Paris").is_ok());
    }
}
