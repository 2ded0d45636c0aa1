//! The scheduled part of the demo: the schedule file the replicas run (`demo-pulse`, one
//! `demo.record` job every second; `demo-fanout`, every 3 s a batch of [`FANOUT_ITEMS`] `demo.add`
//! with a `demo.record` callback), the `demo.record` job, and the count of what was fired and run.
//!
//! `demo.record` is how the demo sees scheduled jobs and batch callbacks, which are published
//! without a reply queue: each run writes its job id down, one line in `records.txt` in the demo's
//! directory. The ids are the firing ids (`<schedule>@<tick UTC>`) and `<batch id>.callback`; a job
//! that ran twice is written down twice.

use crate::console::outln;
use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use lepus::{BatchId, Client, Job};
use lepus_demo::jobs::Add;
use lepus_scheduler::Schedule;
use lepus_worker::{JobContext, JobError, Worker};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The variable that tells a worker process the file to write its records in.
pub(crate) const RECORDS_VARIABLE: &str = "LEPUS_DEMO_RECORDS";
/// That file, in the demo's directory.
pub(crate) const RECORDS_FILE: &str = "records.txt";
/// Jobs in each batch of `demo-fanout`.
pub(crate) const FANOUT_ITEMS: usize = 4;

/// `demo.record`: takes any keyword arguments (a callback gets the batch summary as `batch`),
/// writes its job id down and returns it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Record(pub(crate) Map<String, Value>);

impl Job for Record {
    const NAME: &'static str = "demo.record";
    type Output = String;
}

/// Adds `demo.record` to a worker; its records go to the file named by [`RECORDS_VARIABLE`].
pub(crate) fn register_record(worker: Worker) -> Worker {
    let file = std::env::var_os(RECORDS_VARIABLE).map(PathBuf::from);
    worker.register(move |_: Record, context: JobContext| {
        let (file, id) = (file.clone(), context.id().to_string());
        async move {
            let file = file.ok_or_else(|| JobError::permanent(format!("{RECORDS_VARIABLE} is not set")))?;
            let line = format!("{id}\n");
            // One short write to a file opened for appending: the lines of concurrent runs (in
            // this worker process or another) do not mix.
            let append =
                move || std::fs::OpenOptions::new().create(true).append(true).open(file)?.write_all(line.as_bytes());
            tokio::task::spawn_blocking(append).await.map_err(anyhow::Error::from)?.map_err(anyhow::Error::from)?;
            Ok::<_, JobError>(id)
        }
    })
}

/// Every job id written down in the demo's directory `dir` so far, with how many times it ran.
pub(crate) fn read_records(dir: &Path) -> anyhow::Result<BTreeMap<String, u32>> {
    let (path, mut runs) = (dir.join(RECORDS_FILE), BTreeMap::new());
    let text = match std::fs::read_to_string(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        read => read.with_context(|| format!("cannot read {}", path.display()))?,
    };
    for id in text.lines() {
        *runs.entry(id.to_owned()).or_default() += 1;
    }
    Ok(runs)
}

/// The demo's two schedules and the file that holds them.
#[derive(Debug)]
pub(crate) struct Schedules {
    text: String,
    pub(crate) pulse: Schedule,
    pub(crate) fanout: Schedule,
}

impl Schedules {
    /// Both schedules, sending to `queue`, read from the file as the replicas will read it.
    pub(crate) fn new(queue: &str) -> anyhow::Result<Self> {
        let items: Vec<String> = (1..=FANOUT_ITEMS).map(|n| format!("{{ a = {n}, b = {} }}", 10 * n)).collect();
        let (record, add, items) = (Record::NAME, Add::NAME, items.join(", "));
        let text = format!(
            r#"# Written by lepus-demo for its scheduler replicas (the format: scheduler/src/file.rs).

[[schedule]]
name = "demo-pulse"
cron = "* * * * * *"      # every second
job = "{record}"          # writes its job id down: the firing id, demo-pulse@<tick UTC>
queue = "{queue}"

[[schedule]]
name = "demo-fanout"
cron = "*/3 * * * * *"    # every 3 seconds: a batch, one job per item
job = "{add}"
queue = "{queue}"
items = [{items}]
callback = {{ job = "{record}", queue = "{queue}" }}   # once each tick's batch is done
"#
        );
        let mut parsed = lepus_scheduler::parse_schedules(&text, "schedules.toml")?.into_iter();
        let (Some(pulse), Some(fanout)) = (parsed.next(), parsed.next()) else {
            anyhow::bail!("the demo's schedule file does not hold two schedules")
        };
        Ok(Self { text, pulse, fanout })
    }

    /// Writes the file `schedules.toml` in `dir` and says what it holds.
    pub(crate) fn write(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join("schedules.toml");
        std::fs::write(&path, &self.text).with_context(|| format!("cannot write {}", path.display()))?;
        let (shown, pulse, fanout) = (path.display(), self.pulse.cron(), self.fanout.cron());
        outln!(
            "Schedules in {shown}: demo-pulse ({pulse:?}, one demo.record job) and demo-fanout ({fanout:?}, a batch of {FANOUT_ITEMS} demo.add with a demo.record callback)."
        );
        Ok(path)
    }

    /// Every firing id of `schedule` that the replicas, running from `started` to `stopped`,
    /// can have fired (a second more on each side), oldest first.
    pub(crate) fn firing_ids(schedule: &Schedule, started: DateTime<Utc>, stopped: DateTime<Utc>) -> Vec<String> {
        let (from, until) = (started - TimeDelta::seconds(1), stopped + TimeDelta::seconds(1));
        schedule.ticks(from, until, 100_000).into_iter().map(|tick| schedule.firing_id(tick)).collect()
    }

    /// Waits up to `patience` (or until interrupted) for the workers to run everything the
    /// replicas of `group` fired while they `ran` (from when to when), then prints each schedule's
    /// firings; `true` if every tick from the first that ran to the last fired ran exactly once,
    /// and every batch completed.
    pub(crate) async fn report(
        &self,
        client: &Client,
        group: &str,
        ran: (DateTime<Utc>, DateTime<Utc>),
        dir: &Path,
        patience: Duration,
        interrupted: &CancellationToken,
    ) -> anyhow::Result<bool> {
        outln!("Waiting for the workers to run the last firings…");
        let channel = client.broker().channel().await?;
        let pulse_last = lepus_scheduler::last_fired(&channel, group, self.pulse.name()).await?;
        let fanout_last = lepus_scheduler::last_fired(&channel, group, self.fanout.name()).await?;
        drop(channel.close(200, "read".into()).await);
        let waiting = Instant::now();
        let (pulse, fanout) = loop {
            let runs = read_records(dir)?;
            let pulse = firings(&self.pulse, ran, pulse_last, &runs, "");
            let fanout = firings(&self.fanout, ran, fanout_last, &runs, ".callback");
            let all_ran = pulse.iter().chain(&fanout).all(|(runs, _)| *runs > 0);
            if all_ran || waiting.elapsed() > patience || interrupted.is_cancelled() {
                break (pulse, fanout);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        anyhow::ensure!(!interrupted.is_cancelled(), "interrupted");
        let (mut done, mut failed, mut pending, mut complete) = (0, 0, 0, 0);
        for (_, id) in &fanout {
            let batch = client.batch_progress(&BatchId::from(id.as_str())).await?;
            (done, failed, pending) = (done + batch.done, failed + batch.failed, pending + batch.pending);
            complete += usize::from(batch.complete);
        }
        outln!();
        outln!("Scheduled firings (group {group})");
        let total = pulse.iter().chain(&fanout).filter(|(runs, _)| *runs > 0).count();
        outln!("  firings         {total:>7}   (distinct firing ids <schedule>@<tick UTC>, as the workers ran them)");
        let pulse_ok = print_line(&self.pulse, "demo.record", "each", &pulse);
        let what = format!(
            "batches of {FANOUT_ITEMS} demo.add, {complete} complete: {done} done, {failed} failed, {pending} pending"
        );
        let fanout_ok = print_line(&self.fanout, &what, "each callback", &fanout);
        Ok(pulse_ok && fanout_ok && complete == fanout.len() && failed == 0 && done == FANOUT_ITEMS * fanout.len())
    }
}

/// The firings of `schedule` from the first tick that ran (a run of the id plus `suffix` was
/// written down) to the last it fired (`last`, kept by the broker), with how many times each ran;
/// the replicas ran from `started` to `stopped`.
fn firings(
    schedule: &Schedule,
    (started, stopped): (DateTime<Utc>, DateTime<Utc>),
    last: Option<DateTime<Utc>>,
    runs: &BTreeMap<String, u32>,
    suffix: &str,
) -> Vec<(u32, String)> {
    let Some(last) = last.map(|tick| schedule.firing_id(tick)) else { return Vec::new() };
    let ran = |id: &String| runs.get(&format!("{id}{suffix}")).copied().unwrap_or_default();
    let ids = Schedules::firing_ids(schedule, started, stopped);
    let first = ids.iter().find(|id| ran(id) > 0).unwrap_or(&last).clone();
    ids.into_iter().filter(|id| *id >= first && *id <= last).map(|id| (ran(&id), id)).collect()
}

/// Prints one schedule's line: how many of its firings ran (each a `what`), whether `each` ran
/// once, and the ticks missed; `true` if some ran, each once, and none was missed.
fn print_line(schedule: &Schedule, what: &str, each: &str, firings: &[(u32, String)]) -> bool {
    let tick = |id: &str| id.rsplit_once('T').map_or(id, |(_, time)| time).to_owned();
    let ids = |keep: fn(u32) -> bool| -> Vec<&str> {
        firings.iter().filter(|(runs, _)| keep(*runs)).map(|(_, id)| id.as_str()).collect()
    };
    let (ran, missed, twice) = (ids(|runs| runs > 0), ids(|runs| runs == 0), ids(|runs| runs > 1).len());
    let once = if twice == 0 { format!("{each} ran once") } else { format!("{twice} ran more than once") };
    let missed_text = match missed.as_slice() {
        [] => "no tick missed".to_owned(),
        [one] => format!("missed {one}"),
        many => format!("{} ticks missed, the first {}", many.len(), many[0]),
    };
    let span = match (ran.first(), ran.last()) {
        (Some(first), Some(last)) => format!(", {} to {}", tick(first), tick(last)),
        _ => String::new(),
    };
    let (name, cron) = (schedule.name(), schedule.cron());
    outln!("  {name:<15} {:>7}   (cron {cron:?}: {what}; {once}, {missed_text}{span})", ran.len());
    !ran.is_empty() && twice == 0 && missed.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_valid_and_sends_to_the_demo_queue() {
        let schedules = Schedules::new("lepus-demo-1").expect("valid");
        assert_eq!((schedules.pulse.name(), schedules.fanout.name()), ("demo-pulse", "demo-fanout"));
        let tick = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:03Z").expect("valid").to_utc();
        let lepus_scheduler::Firing::Batch(batch) = schedules.fanout.firing(tick).expect("a firing") else {
            panic!("a batch")
        };
        assert_eq!(batch.id.as_str(), "demo-fanout@2026-01-01T00:00:03Z");
        assert_eq!(batch.messages.len(), FANOUT_ITEMS);
        assert!(batch.messages.iter().all(|(queue, _)| queue == "lepus-demo-1"));
        let callback = batch.snapshot.callback.expect("a callback");
        assert_eq!((callback.task.as_str(), callback.queue.as_str()), ("demo.record", "lepus-demo-1"));
    }

    #[test]
    fn ticks_count_from_the_first_that_ran_to_the_last_fired() {
        let schedules = Schedules::new("q").expect("valid");
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).expect("valid").to_utc();
        let runs: BTreeMap<String, u32> =
            [("demo-pulse@2026-01-01T00:00:02Z", 1), ("demo-pulse@2026-01-01T00:00:04Z", 2)]
                .map(|(id, n)| (id.to_owned(), n))
                .into();
        let window = (at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:09Z"));
        let fired = firings(&schedules.pulse, window, Some(at("2026-01-01T00:00:05Z")), &runs, "");
        let runs: Vec<u32> = fired.iter().map(|(n, _)| *n).collect();
        assert_eq!(runs, [1, 0, 2, 0]);
        assert!(!print_line(&schedules.pulse, "demo.record", "each", &fired));
    }
}
