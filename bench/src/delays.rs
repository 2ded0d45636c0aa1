//! `--delays`: the delay cascade under load. Each round sends 100,000 `bench.stamp` jobs with one
//! [`lepus::Client::enqueue_many`] to a fresh work queue, each due at a moment of its own spread
//! uniformly over the next 60 s (a job's delay counts from the moment it is sent), so that the
//! cascade holds them; one Lepus worker runs them as they come out. Measured:
//!
//! - that no job starts before it is due (each compares the clock with the due time its input
//!   carries, which is its `eta`) and that every one runs: a failure of either fails the run;
//! - how late jobs start: p50, p99 and max (the cascade rounds a delay up to the next 1/8 s,
//!   so up to 125 ms of it is by design);
//! - the cascade's throughput: jobs/s entering it (all sent and confirmed) and leaving it (jobs
//!   run, from the first to the last, and the busiest second);
//! - the worker's resident memory, sampled every 250 ms from before the first job is sent to the
//!   last run: it must stay flat, since waiting jobs live in the broker.

use crate::admin::Admin;
use crate::figures::{nearest_rank, spread};
use crate::fleet;
use crate::options::Options;
use crate::proc_status;
use crate::progress::Progress;
use crate::rss_sampler::{RssSampler, RssSummary};
use crate::runs::{self, Tally};
use crate::stamp::Stamp;
use crate::worker_process::WorkerProcess;
use anyhow::{Context, bail};
use chrono::{TimeDelta, Utc};
use lepus::{Client, ClientOptions, Request};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

const JOBS: u32 = 100_000;

/// Jobs are sent in this stride through the spread of delays (coprime with [`JOBS`]), so that
/// consecutive jobs' delays are far apart.
const STRIDE: u64 = 38_197;

/// How long after the last job is due a missing one counts as lost.
const DRAIN: Duration = Duration::from_secs(60);

/// How long the broker may take to confirm all the jobs, at the most.
const SENDING: Duration = Duration::from_secs(120);

const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// How long the started worker idles before its memory at rest is read.
const SETTLE: Duration = Duration::from_secs(1);

/// The spread, seconds, for which the lateness target is set.
const TARGET_SPREAD_S: u64 = 60;

/// The p99 lateness the mode aims at, milliseconds.
const P99_TARGET_MS: f64 = 1500.0;

/// How much the largest RSS sample of the last third of a run may exceed that of the first third
/// for the worker's memory to count as flat, KiB.
const FLAT_SLACK_KIB: u64 = 1024;

/// What one round measured.
#[derive(Debug, Clone, Copy)]
struct Round {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// p99 lateness of the jobs due while the jobs were still being sent, and of the others.
    p99_sending_ms: f64,
    p99_after_ms: f64,
    entering_per_s: f64,
    leaving_per_s: f64,
    busiest_second: f64,
    rest_kib: u64,
    rss: RssSummary,
}

pub(crate) async fn run(options: &Options, admin: &Admin) -> anyhow::Result<()> {
    println!("lepus-bench --delays: {JOBS} delayed jobs through the delay cascade, one Lepus worker");
    println!("  each job due at its own moment, spread uniformly over the {} s after it is sent;", options.spread);
    println!("    sent with one Client::enqueue_many, up to {} publishes awaiting their confirm;", options.window);
    println!("    the worker runs {} jobs at once (prefetch {0}); {} round(s)", options.concurrency, options.rounds);
    println!("  no job may run early and every job must run (else the run fails); lateness is measured by");
    println!("    the job against its due time; the cascade rounds delays up to the next 1/8 s");
    println!();
    let mut rounds = Vec::new();
    for round in 1..=options.rounds {
        let label = format!("round {round}/{}", options.rounds);
        let measured = one_round(options, admin, round, &label).await.with_context(|| label.clone())?;
        let Round {
            p50_ms,
            p99_ms,
            max_ms,
            p99_sending_ms,
            p99_after_ms,
            entering_per_s,
            leaving_per_s,
            busiest_second,
            rest_kib,
            rss,
        } = measured;
        println!(
            "{label}: lateness p50 {p50_ms:.0} ms, p99 {p99_ms:.0} ms (due while sending {p99_sending_ms:.0}, after \
             {p99_after_ms:.0}), max {max_ms:.0} ms; entering {entering_per_s:.0} jobs/s, \
             leaving {leaving_per_s:.0} jobs/s (busiest second {busiest_second:.0}); worker RSS {} at rest, {}–{} MiB \
             over the run (largest in the first third {}, in the last third {})",
            mib(rest_kib),
            mib(rss.min_kib),
            mib(rss.max_kib),
            mib(rss.first_third_max_kib),
            mib(rss.last_third_max_kib)
        );
        rounds.push(measured);
    }
    summary(&rounds, options.spread);
    fleet::remove_logs()
}

fn summary(rounds: &[Round], spread_s: u64) {
    let of = |figure: fn(&Round) -> f64| spread(&rounds.iter().map(figure).collect::<Vec<_>>());
    let show = |(median, low, high): (f64, f64, f64)| format!("{median:.0} [{low:.0}–{high:.0}]");
    let show_mib = |(median, low, high): (f64, f64, f64)| format!("{median:.1} [{low:.1}–{high:.1}]");
    println!();
    println!("summary over {} round(s): median [min–max]; no job ran early, none was lost", rounds.len());
    println!("  lateness p50, ms                       {}", show(of(|r| r.p50_ms)));
    println!("  lateness p99, ms                       {}", show(of(|r| r.p99_ms)));
    println!("    of the jobs due while sending, ms    {}", show(of(|r| r.p99_sending_ms)));
    println!("    of the jobs due after, ms            {}", show(of(|r| r.p99_after_ms)));
    println!("  lateness max, ms                       {}", show(of(|r| r.max_ms)));
    println!("  entering the cascade, jobs/s           {}", show(of(|r| r.entering_per_s)));
    println!("  leaving it (jobs run), jobs/s          {}", show(of(|r| r.leaving_per_s)));
    println!("  leaving it, busiest second, jobs       {}", show(of(|r| r.busiest_second)));
    println!("  worker RSS at rest, MiB                {}", show_mib(of(|r| r.rest_kib as f64 / 1024.0)));
    println!("  worker RSS smallest sample, MiB        {}", show_mib(of(|r| r.rss.min_kib as f64 / 1024.0)));
    println!("  worker RSS largest sample, MiB         {}", show_mib(of(|r| r.rss.max_kib as f64 / 1024.0)));
    let p99 = of(|r| r.p99_ms).0;
    let met = |yes: bool| if yes { "met" } else { "not met" };
    if spread_s == TARGET_SPREAD_S {
        println!("  target p99 lateness ≤ {P99_TARGET_MS:.0} ms: {}", met(p99 <= P99_TARGET_MS));
    } else {
        println!(
            "  (the lateness target is for jobs due over {TARGET_SPREAD_S} s; over {spread_s} s, what leaves is the cascade's throughput)"
        );
    }
    let flat = rounds.iter().all(|r| r.rss.last_third_max_kib <= r.rss.first_third_max_kib + FLAT_SLACK_KIB);
    println!(
        "  target worker RSS flat (last third's largest sample ≤ first third's + {} MiB, every round): {}",
        FLAT_SLACK_KIB / 1024,
        met(flat)
    );
}

/// One round on a queue of its own, deleted afterwards whatever happened.
async fn one_round(options: &Options, admin: &Admin, round: u32, label: &str) -> anyhow::Result<Round> {
    let queue = format!("bench-{}-{round}-delays", std::process::id());
    admin.declare_work_queue(&queue).await?;
    let measured = async {
        let mut workers = fleet::start(options, admin, &queue, 1, options.concurrency).await?;
        let measured = measure(options, &queue, &mut workers, label).await;
        let stopped = fleet::stop(workers).await;
        measured.and_then(|round| stopped.map(|()| round))
    }
    .await;
    admin.delete(&[queue.clone(), lepus::internal::topology::dead_letter_queue(&queue)]).await;
    measured
}

async fn measure(options: &Options, queue: &str, workers: &mut [WorkerProcess], label: &str) -> anyhow::Result<Round> {
    let pid = workers[0].pid();
    tokio::time::sleep(SETTLE).await;
    let rest_kib = proc_status::read(pid)?.resident_kib;
    let sampler = RssSampler::start(pid, SAMPLE_EVERY);
    let client_options = ClientOptions::default().publish_window(options.window as usize);
    let client =
        Client::connect_with(&options.amqp_url, client_options).await.context("the Lepus client cannot connect")?;
    let ran = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(format!("{label}: {JOBS} jobs"), JOBS.into(), vec![("ran", Arc::clone(&ran))]);
    let due_over = Duration::from_secs(options.spread);
    let start = Instant::now();
    let requests = (0..JOBS).map(|index| {
        let due = Utc::now() + TimeDelta::from_std(delay(index, due_over)).unwrap_or(TimeDelta::MAX);
        let stamp = Stamp { index, due_us: due.timestamp_micros(), sleep_ms: 0 };
        Request::new(stamp).queue(queue.to_owned()).at(due)
    });
    let sending = async {
        let sent = client.enqueue_many(requests).await;
        (sent, start.elapsed())
    };
    let deadline = start + SENDING + due_over + DRAIN;
    let ((sent, sending), tally) = tokio::join!(sending, runs::gather(workers, JOBS, deadline, &ran));
    let tally = tally?;
    let rss = sampler.stop().await?;
    client.close().await?;
    let failed: Vec<_> = sent.iter().filter_map(|sent| sent.as_ref().err()).collect();
    if let Some(first) = failed.first() {
        bail!("{} of {JOBS} jobs were not enqueued; the first error: {first}", failed.len());
    }
    let measured = figures(&tally, start, sending, rest_kib, rss);
    check(&tally)?;
    progress.finish(&format!(
        "all ran; lateness p99 {:.0} ms, max {:.0} ms{}",
        measured.p99_ms,
        measured.max_ms,
        if tally.repeated > 0 { format!("; {} ran twice", tally.repeated) } else { String::new() }
    ));
    Ok(measured)
}

/// The delay of the job sent `index`-th: the `index * STRIDE mod JOBS`-th of `JOBS` delays
/// evenly spread over `due_over`.
fn delay(index: u32, due_over: Duration) -> Duration {
    let slot = u64::from(index) * STRIDE % u64::from(JOBS);
    due_over.mul_f64((slot as f64 + 0.5) / f64::from(JOBS))
}

fn figures(tally: &Tally, start: Instant, sending: Duration, rest_kib: u64, rss: RssSummary) -> Round {
    let mut late = tally.late_us.clone();
    late.sort_unstable();
    let ms = |p: f64| nearest_rank(&late, p).map_or(f64::NAN, |us| us as f64 / 1000.0);
    // When each job was due, from its arrival and its lateness: while the jobs were still being
    // sent (the broker busy taking them in), or after.
    let (mut while_sending, mut after) = (Vec::new(), Vec::new());
    for (arrived, late_us) in tally.arrivals.iter().zip(&tally.late_us) {
        let arrived_us = i64::try_from(arrived.saturating_duration_since(start).as_micros()).unwrap_or(i64::MAX);
        let due_us = arrived_us - late_us;
        let during = u128::try_from(due_us).is_ok_and(|due| due < sending.as_micros());
        if during { while_sending.push(*late_us) } else { after.push(*late_us) }
    }
    let p99 = |mut late: Vec<i64>| {
        late.sort_unstable();
        nearest_rank(&late, 99.0).map_or(f64::NAN, |us| us as f64 / 1000.0)
    };
    let (first, last) = (tally.arrivals.first().copied(), tally.last());
    let running = match (first, last) {
        (Some(first), Some(last)) => last.saturating_duration_since(first),
        _ => Duration::ZERO,
    };
    let mut per_second = vec![0u32; 1];
    for arrived in &tally.arrivals {
        let second = arrived.saturating_duration_since(start).as_secs() as usize;
        if per_second.len() <= second {
            per_second.resize(second + 1, 0);
        }
        per_second[second] += 1;
    }
    Round {
        p50_ms: ms(50.0),
        p99_ms: ms(99.0),
        max_ms: ms(100.0),
        p99_sending_ms: p99(while_sending),
        p99_after_ms: p99(after),
        entering_per_s: f64::from(JOBS) / sending.as_secs_f64(),
        leaving_per_s: tally.arrivals.len() as f64 / running.as_secs_f64().max(f64::MIN_POSITIVE),
        busiest_second: per_second.iter().copied().max().map_or(0.0, f64::from),
        rest_kib,
        rss,
    }
}

/// Fails if a job ran before it was due or never ran.
fn check(tally: &Tally) -> anyhow::Result<()> {
    let early: Vec<i64> = tally.late_us.iter().copied().filter(|late| *late < 0).collect();
    if let Some(earliest) = early.iter().min() {
        bail!("{} jobs ran before they were due, the earliest {:.3} ms early", early.len(), -*earliest as f64 / 1000.0);
    }
    if tally.lost() > 0 {
        bail!("{} of {JOBS} jobs never ran", tally.lost());
    }
    Ok(())
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}
