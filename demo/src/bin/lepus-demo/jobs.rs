//! The demo jobs sent to the workers: the mix (about 80% `demo.add`, 14% `demo.echo`, 5% short
//! `demo.sleep` and 1% `demo.fail`, random inputs, random order) and what each job must answer,
//! sending them with many in flight while the progress shows, the [`Tally`] of the results as they
//! arrive, and the report: counts, failures, jobs/s, and how the jobs spread over the workers.

use crate::children::Children;
use crate::console::{Progress, REDRAW_EVERY, outln, per_second};
use crate::options::Options;
use lepus::protocol::{ResultMessage, Status};
use lepus::{Client, Job, Request};
use lepus_demo::jobs::{Add, Echo, Fail, Sleep};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// One job to send.
#[derive(Debug, Clone)]
pub(crate) enum Planned {
    Add(Add),
    Echo(Echo),
    Sleep(Sleep),
    Fail(Fail),
}

impl Planned {
    /// The `n`th job of the mix.
    fn random(n: u32) -> Self {
        match fastrand::u32(0..100) {
            0 => Planned::Fail(Fail { message: format!("demo failure #{n}: this one is meant to fail") }),
            1..=5 => Planned::Sleep(Sleep { seconds: f64::from(fastrand::u32(10..=50)) / 1000.0 }),
            6..=19 => {
                let word = ["alpha", "beta", "gamma", "delta", "epsilon"][fastrand::usize(0..5)];
                let nested = json!({"id": fastrand::i64(-1_000_000..=1_000_000), "note": format!("échantillon {n} ✓")});
                let flags = [fastrand::bool(), fastrand::bool()];
                let input = json!({"n": n, "word": word, "flags": flags, "nested": nested});
                Planned::Echo(Echo(serde_json::from_value(input).unwrap_or_default()))
            }
            _ => {
                let term = || fastrand::i64(-1_000_000_000..=1_000_000_000);
                Planned::Add(Add { a: term(), b: term() })
            }
        }
    }

    /// The job's name on the wire.
    fn name(&self) -> &'static str {
        match self {
            Planned::Add(_) => Add::NAME,
            Planned::Echo(_) => Echo::NAME,
            Planned::Sleep(_) => Sleep::NAME,
            Planned::Fail(_) => Fail::NAME,
        }
    }

    /// Checks a result against what the job must answer (its output, or for `demo.fail` a
    /// failure with its message); the error says what differed.
    fn check(&self, result: &ResultMessage) -> Result<(), String> {
        let expected = match self {
            Planned::Add(job) => Ok(json!(job.a.checked_add(job.b))),
            Planned::Echo(job) => Ok(Value::Object(job.0.clone())),
            Planned::Sleep(job) => Ok(json!(job.seconds)),
            Planned::Fail(job) => Err(job.message.clone()),
        };
        let message = || result.exception().map_or_else(|| result.result.to_string(), |e| e.message());
        let got = match result.status {
            Status::Success => Ok(result.result.clone()),
            Status::Failure => Err(message()),
            other => Err(format!("{other:?}: {}", message())),
        };
        if got == expected { Ok(()) } else { Err(format!("{self:?} answered {got:?}, expected {expected:?}")) }
    }

    /// Sends the job to `queue` and waits up to `timeout` for its result.
    async fn send(self, client: &Client, queue: &str, timeout: Duration) -> lepus::Result<ResultMessage> {
        async fn send<J: Job>(client: &Client, job: J, queue: &str, timeout: Duration) -> lepus::Result<ResultMessage> {
            client.submit(Request::new(job).queue(queue)).await?.result_message(timeout).await
        }
        match self {
            Planned::Add(job) => send(client, job, queue, timeout).await,
            Planned::Echo(job) => send(client, job, queue, timeout).await,
            Planned::Sleep(job) => send(client, job, queue, timeout).await,
            Planned::Fail(job) => send(client, job, queue, timeout).await,
        }
    }
}

/// What came back for the jobs so far.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Jobs sent, by name.
    mix: BTreeMap<&'static str, u64>,
    /// Jobs whose result arrived, or that will never get one.
    done: u64,
    succeeded: u64,
    failed: u64,
    /// Results that differ from what the job must answer.
    wrong: u64,
    /// Jobs that got no result (the submit failed, or the result did not come in time).
    lost: u64,
    /// Jobs run, by the worker that ran them (`host:pid`).
    by_worker: BTreeMap<String, u64>,
    /// The first few problems.
    problems: Vec<String>,
}

impl Tally {
    fn record(&mut self, job: &Planned, outcome: lepus::Result<ResultMessage>) {
        *self.mix.entry(job.name()).or_default() += 1;
        self.done += 1;
        let checked = match outcome {
            Ok(result) => {
                *self.by_worker.entry(result.worker.clone().unwrap_or_else(|| "(unnamed)".into())).or_default() += 1;
                *if result.status == Status::Success { &mut self.succeeded } else { &mut self.failed } += 1;
                job.check(&result).inspect_err(|_| self.wrong += 1)
            }
            Err(e) => {
                self.lost += 1;
                Err(format!("{} got no result: {e}", job.name()))
            }
        };
        if let Err(problem) = checked
            && self.problems.len() < 5
        {
            self.problems.push(problem);
        }
    }

    /// Prints the report.
    fn print(&self, elapsed: Duration, workers: &Children) {
        let kinds: Vec<String> = self.mix.iter().map(|(name, count)| format!("{count} {name}")).collect();
        let planned = self.mix.get(Fail::NAME).copied().unwrap_or_default();
        let failures = if self.failed == planned && self.wrong == 0 {
            "all of them demo.fail, as planned, each with its error message".to_owned()
        } else {
            format!("{planned} demo.fail planned")
        };
        outln!();
        outln!("Results");
        outln!("  jobs            {:>7}   ({})", self.done, kinds.join(", "));
        outln!("  succeeded       {:>7}", self.succeeded);
        outln!("  failed          {:>7}   ({failures})", self.failed);
        outln!("  wrong results   {:>7}   (sums, echoes and sleeps checked against their inputs)", self.wrong);
        outln!("  no result       {:>7}", self.lost);
        outln!("  elapsed         {:>7.2}s", elapsed.as_secs_f64());
        outln!("  throughput      {:>7.0} jobs/s", per_second(self.done, elapsed));
        for problem in &self.problems {
            outln!("  ! {problem}");
        }
        let mut rows: Vec<(String, u64)> = workers.names().into_iter().map(|name| (name, 0)).collect();
        for (node, &jobs) in &self.by_worker {
            match workers.index_of(node) {
                Some(index) => rows[index].1 += jobs,
                None => rows.push((node.clone(), jobs)),
            }
        }
        outln!();
        outln!("Jobs per worker process");
        for (name, jobs) in rows {
            outln!("  {name:<24} {jobs:>7}");
        }
    }
}

/// Sends `--jobs` jobs to `queue`, at most `--in-flight` unanswered, showing the progress until
/// the last result is in, then prints the report; `true` if every job got the expected result.
/// Fails if the demo is interrupted or every worker ended.
pub(crate) async fn run(
    client: &Client,
    queue: &str,
    options: &Options,
    workers: &mut Children,
    interrupted: &CancellationToken,
) -> anyhow::Result<bool> {
    let total = u64::from(options.jobs);
    outln!("Sending {total} jobs, at most {} in flight…", options.in_flight);
    let (tally, next) = (Arc::new(Mutex::new(Tally::default())), Arc::new(AtomicU32::new(0)));
    let (started, mut progress, mut lanes) = (Instant::now(), Progress::new(total), JoinSet::new());
    // `--in-flight` lanes, each sending the next job once the previous one's result is in.
    for _ in 0..options.in_flight.min(options.jobs) {
        let (client, queue, tally, next) = (client.clone(), queue.to_owned(), Arc::clone(&tally), Arc::clone(&next));
        let (jobs, timeout) = (options.jobs, options.timeout);
        let claim = move || Some(next.fetch_add(1, Ordering::Relaxed)).filter(|&n| n < jobs);
        lanes.spawn(async move {
            while let Some(n) = claim() {
                let job = Planned::random(n);
                let outcome = job.clone().send(&client, &queue, timeout).await;
                tally.lock().unwrap_or_else(PoisonError::into_inner).record(&job, outcome);
            }
        });
    }
    let sending = async { while lanes.join_next().await.is_some() {} };
    tokio::pin!(sending);
    let workers_ended = loop {
        tokio::select! {
            () = &mut sending => break false,
            () = interrupted.cancelled() => anyhow::bail!("interrupted"),
            () = tokio::time::sleep(REDRAW_EVERY) => {
                let tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
                progress.show(tally.done, tally.failed + tally.lost);
                if workers.running() == 0 {
                    break true;
                }
            }
        }
    };
    let elapsed = started.elapsed();
    let tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
    progress.finish(tally.done, tally.failed + tally.lost);
    anyhow::ensure!(!workers_ended, "every worker process has ended");
    tally.print(elapsed, workers);
    Ok(tally.done == total && tally.wrong == 0 && tally.lost == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lepus::JobId;
    use lepus::protocol::ExceptionInfo;

    #[test]
    fn the_mix_is_mostly_additions_with_a_few_failures() {
        let mut mix = BTreeMap::<&str, usize>::new();
        for n in 0..10_000 {
            *mix.entry(Planned::random(n).name()).or_default() += 1;
        }
        assert!(mix["demo.add"] > 7_000 && (20..300).contains(&mix["demo.fail"]), "{mix:?}");
        assert!(mix["demo.echo"] > 0 && mix["demo.sleep"] > 0, "{mix:?}");
    }

    #[test]
    fn results_are_checked() {
        let id = JobId::from("x");
        let add = Planned::Add(Add { a: 2, b: 3 });
        assert!(add.check(&ResultMessage::success(&id, json!(5))).is_ok());
        assert!(add.check(&ResultMessage::success(&id, json!(6))).is_err());
        let fail = Planned::Fail(Fail { message: "boom".into() });
        assert!(fail.check(&ResultMessage::failure(&id, &ExceptionInfo::new("JobError", "boom"), None)).is_ok());
        assert!(fail.check(&ResultMessage::success(&id, Value::Null)).is_err());
    }
}
