//! The report printed once the jobs are done: counts, correctness, speed, and how the jobs spread
//! over the worker processes.

use crate::console::outln;
use crate::plan::Planned;
use crate::progress::per_second;
use crate::tally::Tally;
use std::collections::BTreeMap;
use std::time::Duration;

/// How many jobs of each kind were planned, by job name.
pub(crate) fn mix_of(jobs: &[Planned]) -> BTreeMap<&'static str, u64> {
    let mut mix = BTreeMap::new();
    for job in jobs {
        *mix.entry(job.name()).or_default() += 1;
    }
    mix
}

/// Everything the report shows.
#[derive(Debug)]
pub(crate) struct Report<'a> {
    pub(crate) mix: &'a BTreeMap<&'static str, u64>,
    pub(crate) tally: &'a Tally,
    pub(crate) elapsed: Duration,
    /// Jobs run by each worker process, labelled.
    pub(crate) per_worker: &'a [(String, u64)],
}

impl Report<'_> {
    /// Prints the report on standard output.
    pub(crate) fn print(&self) {
        let Report { mix, tally, elapsed, per_worker } = self;
        let total: u64 = mix.values().sum();
        let kinds: Vec<String> = mix.iter().map(|(name, count)| format!("{count} {name}")).collect();
        outln!();
        outln!("Results");
        outln!("  jobs            {total:>7}   ({})", kinds.join(", "));
        outln!("  succeeded       {:>7}", tally.succeeded);
        outln!("  failed          {:>7}   ({})", tally.failed, self.failures());
        outln!("  wrong results   {:>7}   (sums, echoes and sleeps checked against their inputs)", tally.wrong);
        outln!("  no result       {:>7}", tally.lost);
        outln!("  elapsed         {:>7.2}s", elapsed.as_secs_f64());
        outln!("  throughput      {:>7.0} jobs/s", per_second(tally.done, *elapsed));
        for problem in &tally.examples {
            outln!("  ! {problem}");
        }
        outln!();
        outln!("Jobs per worker process");
        for (label, jobs) in *per_worker {
            outln!("  {label:<24} {jobs:>7}");
        }
    }

    fn failures(&self) -> String {
        let planned = self.mix.get("demo.fail").copied().unwrap_or_default();
        let failed = self.tally.failed;
        let with_message = self.tally.failures_with_message;
        if failed == planned && with_message == failed {
            "all of them demo.fail, as planned, each with its error message".to_owned()
        } else {
            format!("{planned} demo.fail planned; {with_message} of the failures carry an error message")
        }
    }
}
