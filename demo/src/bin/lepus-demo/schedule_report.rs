//! The second half of the summary: the scheduled firings (how many, each tick once, none
//! missed), which replica led, and the client batch's final progress and callback.

use crate::client_batch::{BATCH_JOBS, ClientBatch};
use crate::console::outln;
use crate::firings::{Firings, ScheduleFirings};
use crate::schedule_file::{DemoSchedules, FANOUT_ITEMS};
use crate::schedulers::Replica;

/// Everything this part of the summary shows.
#[derive(Debug)]
pub(crate) struct ScheduleReport<'a> {
    pub(crate) group: &'a str,
    pub(crate) schedules: &'a DemoSchedules,
    pub(crate) firings: &'a Firings,
    pub(crate) replicas: &'a [Replica],
    pub(crate) client_batch: Option<&'a ClientBatch>,
}

impl ScheduleReport<'_> {
    /// Prints the report; returns what did not end as expected.
    pub(crate) fn print(&self) -> Vec<&'static str> {
        let mut wrong = Vec::new();
        let Firings { pulse, fanout, .. } = self.firings;
        let total = pulse.fired.len() + fanout.fired.len();
        outln!();
        outln!("Scheduled firings (group {}, {} replicas)", self.group, self.replicas.len());
        outln!("  firings         {total:>7}   (distinct firing ids <schedule>@<tick UTC>, as the workers ran them)");
        let pulse_ok = self.pulse_line(pulse);
        let fanout_ok = self.fanout_line(fanout);
        if !(pulse_ok && fanout_ok && self.firings.settled) {
            wrong.push("a scheduled tick did not run exactly once");
        }
        if !self.leader_line() {
            wrong.push("no scheduler replica led");
        }
        if !self.client_batch_lines() {
            wrong.push("the client batch did not complete with one callback");
        }
        wrong
    }

    fn pulse_line(&self, pulse: &ScheduleFirings) -> bool {
        let schedule = &self.schedules.pulse;
        let twice = pulse.fired.iter().filter(|f| f.runs > 1).count();
        let span = match (pulse.fired.first(), pulse.fired.last()) {
            (Some(first), Some(last)) => format!(", {} to {}", tick_of(&first.id), tick_of(&last.id)),
            _ => String::new(),
        };
        outln!(
            "  {:<15} {:>7}   (cron {:?}: demo.record; {}{span})",
            schedule.name(),
            pulse.fired.len(),
            schedule.cron(),
            once_and_missed(twice, &pulse.missed)
        );
        !pulse.fired.is_empty() && twice == 0 && pulse.missed.is_empty()
    }

    fn fanout_line(&self, fanout: &ScheduleFirings) -> bool {
        let schedule = &self.schedules.fanout;
        let twice = fanout.fired.iter().filter(|f| f.runs != 1).count();
        let batches: Vec<_> = fanout.fired.iter().filter_map(|f| f.batch.as_ref()).collect();
        let done: usize = batches.iter().map(|b| b.done).sum();
        let failed: usize = batches.iter().map(|b| b.failed).sum();
        let pending: usize = batches.iter().map(|b| b.pending).sum();
        let complete = batches.iter().filter(|b| b.complete).count();
        outln!(
            "  {:<15} {:>7}   (cron {:?}: batches of {FANOUT_ITEMS} demo.add, {complete} complete: {done} done, {failed} failed, {pending} pending; {})",
            schedule.name(),
            fanout.fired.len(),
            schedule.cron(),
            callbacks_and_missed(twice, &fanout.missed)
        );
        !fanout.fired.is_empty()
            && twice == 0
            && fanout.missed.is_empty()
            && complete == fanout.fired.len()
            && failed == 0
            && done == FANOUT_ITEMS * fanout.fired.len()
    }

    fn leader_line(&self) -> bool {
        let labels = |keep: fn(&Replica) -> bool| -> Vec<String> {
            self.replicas.iter().filter(|r| keep(r)).map(|r| r.label.clone()).collect()
        };
        let led = labels(|r| r.led);
        let stood_by = labels(|r| r.stood_by && !r.led);
        let took_over = labels(|r| r.stood_by && r.led);
        let mut line = match led.as_slice() {
            [] => "none led".to_owned(),
            [one] => format!("{one} led"),
            many => format!("{} led in turn", many.join(", ")),
        };
        if !took_over.is_empty() {
            line.push_str(&format!("; {} took over after standing by", took_over.join(", ")));
        }
        if !stood_by.is_empty() {
            line.push_str(&format!("; {} stood by", stood_by.join(", ")));
        }
        outln!("  leader            {line}");
        !led.is_empty()
    }

    fn client_batch_lines(&self) -> bool {
        let Some(ClientBatch { id, progress }) = self.client_batch else {
            outln!("  client batch      not sent");
            return false;
        };
        let runs = self.firings.client_callback_runs;
        let callback = match runs {
            0 => "its callback did not run".to_owned(),
            1 => "its callback ran once".to_owned(),
            n => format!("its callback ran {n} times"),
        };
        let state = if progress.complete { "complete" } else { "not complete" };
        outln!();
        outln!("Client batch {id}");
        outln!(
            "  {} jobs: {} done, {} failed, {} pending; {state}; {callback}",
            progress.total,
            progress.done,
            progress.failed,
            progress.pending
        );
        progress.complete && progress.done == BATCH_JOBS && progress.failed == 0 && runs == 1
    }
}

/// `demo-pulse@2026-01-01T10:00:03Z` → `10:00:03Z`.
fn tick_of(id: &str) -> &str {
    id.rsplit_once('T').map_or(id, |(_, time)| time)
}

fn once_and_missed(twice: usize, missed: &[String]) -> String {
    let once = if twice == 0 { "each ran once".to_owned() } else { format!("{twice} ran more than once") };
    format!("{once}, {}", missed_text(missed))
}

fn callbacks_and_missed(wrong: usize, missed: &[String]) -> String {
    let once = if wrong == 0 {
        "each callback ran once".to_owned()
    } else {
        format!("{wrong} callbacks did not run exactly once")
    };
    format!("{once}, {}", missed_text(missed))
}

fn missed_text(missed: &[String]) -> String {
    match missed {
        [] => "no tick missed".to_owned(),
        [one] => format!("missed {one}"),
        many => format!("{} ticks missed, the first {}", many.len(), many[0]),
    }
}
