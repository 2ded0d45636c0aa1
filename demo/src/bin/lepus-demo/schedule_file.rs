//! The demo's schedule file: two schedules on the demo queue, written to the demo's directory for
//! the scheduler replicas, and parsed here too, so the demo knows each schedule's ticks and firing
//! ids (`<schedule>@<tick UTC>`).

use crate::record::Record;
use anyhow::Context as _;
use lepus::Job;
use lepus_demo::jobs::Add;
use lepus_scheduler::Schedule;
use std::path::{Path, PathBuf};

/// A single job every second: `demo.record`, which writes its id (the firing id) down.
pub(crate) const PULSE: &str = "demo-pulse";
/// A batch every 3 seconds: [`FANOUT_ITEMS`] `demo.add` jobs, then `demo.record` as the callback.
pub(crate) const FANOUT: &str = "demo-fanout";
/// Jobs in each batch of [`FANOUT`].
pub(crate) const FANOUT_ITEMS: usize = 4;

/// The schedule file and what it holds.
#[derive(Debug)]
pub(crate) struct DemoSchedules {
    pub(crate) path: PathBuf,
    pub(crate) pulse: Schedule,
    pub(crate) fanout: Schedule,
}

impl DemoSchedules {
    /// Writes `schedules.toml` in `dir`, with both schedules sending to `queue`, and checks it as
    /// the scheduler will.
    pub(crate) fn write(dir: &Path, queue: &str) -> anyhow::Result<Self> {
        let path = dir.join("schedules.toml");
        let text = text(queue);
        std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
        let mut schedules = lepus_scheduler::parse_schedules(&text, &path.display().to_string())?;
        let find = |schedules: &mut Vec<Schedule>, name: &str| {
            let index = schedules.iter().position(|s| s.name() == name);
            index.map(|i| schedules.swap_remove(i)).with_context(|| format!("{name} is missing from the schedule file"))
        };
        let pulse = find(&mut schedules, PULSE)?;
        let fanout = find(&mut schedules, FANOUT)?;
        Ok(Self { path, pulse, fanout })
    }

    /// Both schedules.
    pub(crate) fn all(&self) -> [&Schedule; 2] {
        [&self.pulse, &self.fanout]
    }
}

/// The file (the format is documented in `scheduler/src/file.rs`).
fn text(queue: &str) -> String {
    let items: Vec<String> = (1..=FANOUT_ITEMS).map(|n| format!("{{ a = {n}, b = {} }}", 10 * n)).collect();
    let (record, add) = (Record::NAME, Add::NAME);
    format!(
        r#"# Written by lepus-demo for its scheduler replicas.

[[schedule]]
name = "{PULSE}"
cron = "* * * * * *"      # every second
job = "{record}"          # writes its job id down: the firing id, {PULSE}@<tick UTC>
queue = "{queue}"

[[schedule]]
name = "{FANOUT}"
cron = "*/3 * * * * *"    # every 3 seconds: a batch, one job per item
job = "{add}"
queue = "{queue}"
items = [{items}]
callback = {{ job = "{record}", queue = "{queue}" }}   # once each tick's batch is done
"#,
        items = items.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_valid_and_sends_to_the_demo_queue() {
        let schedules = lepus_scheduler::parse_schedules(&text("lepus-demo-1"), "test").expect("valid");
        let names: Vec<&str> = schedules.iter().map(Schedule::name).collect();
        assert_eq!(names, [PULSE, FANOUT]);
        let tick = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:03Z").expect("valid").to_utc();
        match schedules[1].firing(tick).expect("a firing") {
            lepus_scheduler::Firing::Batch(batch) => {
                assert_eq!(batch.id.as_str(), "demo-fanout@2026-01-01T00:00:03Z");
                assert_eq!(batch.messages.len(), FANOUT_ITEMS);
                assert!(batch.messages.iter().all(|(queue, _)| queue == "lepus-demo-1"));
                let callback = batch.snapshot.callback.expect("a callback");
                assert_eq!((callback.task.as_str(), callback.queue.as_str()), ("demo.record", "lepus-demo-1"));
            }
            lepus_scheduler::Firing::Job { .. } => panic!("a batch"),
        }
    }
}
