//! Schedule files: TOML, one `[[schedule]]` table per schedule, checked entry by entry so that
//! every error names the entry it is about.
//!
//! ```toml
//! [[schedule]]
//! name = "nightly-report"        # required, unique; letters, digits, `-`, `_`, `.`
//! cron = "30 2 * * *"            # required: 5 fields, 6 with seconds first, or @hourly etc.
//! timezone = "Europe/Paris"      # IANA name, default "UTC"
//! job = "reports.nightly"        # required: the job name
//! queue = "lepus"                # default "lepus"
//! args = [1, 2]                  # positional arguments
//! kwargs = { full = true }       # keyword arguments
//! expires = "10m"                # each job expires this long after its tick
//! max_attempts = 3               # retry failures (default backoff)
//! misfire = "skip"               # skip | once | all: ticks missed while no scheduler ran
//! items = [{ region = "eu" }, { region = "us" }]   # optional: one job per item, as a batch
//! callback = { job = "reports.done", queue = "lepus", kwargs = {} }   # optional, with items
//! ```

use crate::schedule::{Misfire, Schedule, ScheduleCallback, ScheduleError};
use lepus::RetryPolicy;
use lepus::protocol::Arguments;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;
use std::path::Path;

/// Why a schedule file was refused: one line per problem, each naming its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleFileError {
    /// Where the schedules came from (a path, or `<inline>`).
    pub source: String,
    /// The problems.
    pub problems: Vec<String>,
}

impl fmt::Display for ScheduleFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid schedule file {}:", self.source)?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ScheduleFileError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    schedule: Vec<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    cron: String,
    #[serde(default)]
    timezone: Option<String>,
    job: String,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    args: Vec<Value>,
    #[serde(default)]
    kwargs: Map<String, Value>,
    #[serde(default)]
    expires: Option<String>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    misfire: Misfire,
    #[serde(default)]
    items: Option<Vec<Value>>,
    #[serde(default)]
    callback: Option<CallbackEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbackEntry {
    job: String,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    kwargs: Map<String, Value>,
}

/// Reads and checks a schedule file.
pub fn load(path: &Path) -> Result<Vec<Schedule>, ScheduleFileError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ScheduleFileError { source: source.clone(), problems: vec![format!("cannot read it: {e}")] })?;
    parse(&text, &source)
}

/// Parses and checks schedules written in TOML; `source` names them in errors.
pub fn parse(text: &str, source: &str) -> Result<Vec<Schedule>, ScheduleFileError> {
    let refuse = |problems| ScheduleFileError { source: source.to_owned(), problems };
    let file: File = toml::from_str(text).map_err(|e| refuse(vec![format!("not valid TOML: {}", e.message())]))?;
    let mut schedules = Vec::new();
    let mut problems = Vec::new();
    let mut names = HashSet::new();
    for (index, raw) in file.schedule.into_iter().enumerate() {
        let label = raw
            .get("name")
            .and_then(toml::Value::as_str)
            .map_or_else(|| format!("schedule #{}", index + 1), |name| format!("schedule #{} ({name:?})", index + 1));
        let checked = Entry::deserialize(raw).map_err(|e| e.message().to_owned()).and_then(|entry| {
            if !names.insert(entry.name.clone()) {
                return Err(format!("the name {:?} is used twice", entry.name));
            }
            entry.into_schedule()
        });
        match checked {
            Ok(schedule) => schedules.push(schedule),
            Err(problem) => problems.push(format!("{label}: {problem}")),
        }
    }
    if problems.is_empty() { Ok(schedules) } else { Err(refuse(problems)) }
}

impl Entry {
    fn into_schedule(self) -> Result<Schedule, String> {
        let problem = |e: ScheduleError| e.to_string();
        let mut schedule = Schedule::new(&self.name, &self.cron, &self.job)
            .map_err(problem)?
            .arguments(Arguments { args: self.args, kwargs: self.kwargs })
            .misfire(self.misfire);
        if let Some(zone) = &self.timezone {
            schedule = schedule.timezone(zone).map_err(problem)?;
        }
        if let Some(queue) = &self.queue {
            schedule = schedule.queue(queue).map_err(problem)?;
        }
        if let Some(expires) = &self.expires {
            let expires =
                humantime::parse_duration(expires).map_err(|e| format!("invalid expires {expires:?}: {e}"))?;
            schedule = schedule.expires(expires);
        }
        match self.max_attempts {
            Some(0) => return Err("max_attempts must be at least 1".into()),
            Some(attempts) => schedule = schedule.retry(RetryPolicy::attempts(attempts)),
            None => {}
        }
        match (self.items, self.callback) {
            (Some(items), callback) => {
                schedule = schedule.items(items);
                if let Some(callback) = callback {
                    let queue = callback.queue.unwrap_or_else(|| lepus::DEFAULT_QUEUE.to_owned());
                    lepus::internal::topology::validate_queue_name(&queue).map_err(|e| format!("callback: {e}"))?;
                    schedule =
                        schedule.callback(ScheduleCallback { job: callback.job, queue, kwargs: callback.kwargs });
                }
            }
            (None, Some(_)) => return Err("a callback needs items (it runs when a tick's batch has finished)".into()),
            (None, None) => {}
        }
        Ok(schedule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_file_loads() {
        let schedules = parse(
            r#"
            [[schedule]]
            name = "pulse"
            cron = "*/2 * * * * *"
            job = "demo.noop"

            [[schedule]]
            name = "report"
            cron = "30 2 * * *"
            timezone = "America/New_York"
            job = "demo.echo"
            kwargs = { full = true }
            expires = "10m"
            max_attempts = 3
            misfire = "all"
            items = [{ region = "eu" }, { region = "us" }]
            callback = { job = "demo.echo" }
            "#,
            "test.toml",
        )
        .expect("valid");
        assert_eq!(schedules.len(), 2);
        assert_eq!(schedules[1].misfire_policy(), Misfire::All);
        assert_eq!(schedules[1].zone(), chrono_tz::America::New_York);
    }

    #[test]
    fn every_bad_entry_is_named_with_its_problem() {
        let error = parse(
            r#"
            [[schedule]]
            name = "ok"
            cron = "@daily"
            job = "demo.noop"

            [[schedule]]
            name = "bad-cron"
            cron = "99 * * * *"
            job = "demo.noop"

            [[schedule]]
            name = "bad-zone"
            cron = "@daily"
            timezone = "Mars/Olympus"
            job = "demo.noop"

            [[schedule]]
            name = "ok"
            cron = "@daily"
            job = "demo.noop"

            [[schedule]]
            cron = "@daily"
            job = "demo.noop"

            [[schedule]]
            name = "typo"
            cron = "@daily"
            job = "demo.noop"
            misfire = "sometimes"
            "#,
            "bad.toml",
        )
        .expect_err("invalid");
        let text = error.to_string();
        assert_eq!(error.problems.len(), 5, "{text}");
        assert!(text.contains(r#"schedule #2 ("bad-cron"): invalid cron expression "99 * * * *""#), "{text}");
        assert!(text.contains(r#"schedule #3 ("bad-zone"): unknown time zone "Mars/Olympus""#), "{text}");
        assert!(text.contains(r#"schedule #4 ("ok"): the name "ok" is used twice"#), "{text}");
        assert!(text.contains("schedule #5: missing field `name`"), "{text}");
        assert!(text.contains(r#"schedule #6 ("typo"): unknown variant `sometimes`"#), "{text}");
    }

    #[test]
    fn broken_toml_and_unknown_keys_are_refused() {
        assert!(parse("[[schedule]\nname=", "x").expect_err("broken").to_string().contains("not valid TOML"));
        let unknown = parse("[[schedule]]\nname='a'\ncron='@daily'\njob='j'\ncorn='x'", "x").expect_err("unknown key");
        assert!(unknown.to_string().contains("unknown field `corn`"), "{unknown}");
    }
}
