//! `--memory`: a worker's resident memory while much waits for it. Each round first sends, with
//! one [`lepus::Client::enqueue_many`], 10,000 `bench.stamp` jobs to run at once and 10,000 due
//! at moments spread uniformly over 10–40 s from then, to a fresh work queue; then starts one
//! Lepus worker, which finds the first 10,000 queued and the others in the delay cascade, and
//! runs them all. Its resident memory is sampled every 100 ms, and its peak (`VmHWM`, which no
//! sample can miss) read before it stops: the peak must stay under 20 MB. Every job must run,
//! and none early, else the run fails.

use crate::admin::Admin;
use crate::figures::spread;
use crate::fleet;
use crate::options::Options;
use crate::progress::Progress;
use crate::rss_sampler::RssSampler;
use crate::runs;
use crate::stamp::Stamp;
use anyhow::{Context, bail};
use chrono::{TimeDelta, Utc};
use lepus::{Client, ClientOptions, Request};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

const QUEUED: u32 = 10_000;
const DELAYED: u32 = 10_000;

/// The delayed jobs are due this long after they are sent, at the soonest.
const SOONEST: Duration = Duration::from_secs(10);

/// Their due times spread over this long after [`SOONEST`].
const SPREAD: Duration = Duration::from_secs(30);

/// How long after the last job is due a missing one counts as lost.
const DRAIN: Duration = Duration::from_secs(60);

const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The peak the worker must stay under: 20 MB.
const LIMIT_BYTES: u64 = 20_000_000;

/// What one round measured, KiB.
#[derive(Debug, Clone, Copy)]
struct Round {
    peak_kib: u64,
    min_kib: u64,
    max_kib: u64,
}

pub(crate) async fn run(options: &Options, admin: &Admin) -> anyhow::Result<()> {
    println!("lepus-bench --memory: one Lepus worker with {QUEUED} jobs queued and {DELAYED} delayed");
    println!(
        "  the delayed ones due {}–{} s after they are sent; all sent before the worker starts;",
        SOONEST.as_secs(),
        (SOONEST + SPREAD).as_secs()
    );
    println!("    the worker runs {} jobs at once (prefetch {0}); {} round(s)", options.concurrency, options.rounds);
    println!(
        "  its RSS sampled every {} ms until the last job ran; its peak (VmHWM) must stay under",
        SAMPLE_EVERY.as_millis()
    );
    println!(
        "    {} MB ({:.2} MiB); every job must run, none early (else the run fails)",
        LIMIT_BYTES / 1_000_000,
        mib_of_bytes(LIMIT_BYTES)
    );
    println!();
    let mut rounds = Vec::new();
    for round in 1..=options.rounds {
        let label = format!("round {round}/{}", options.rounds);
        let measured = one_round(options, admin, round, &label).await.with_context(|| label.clone())?;
        println!(
            "{label}: worker peak RSS (VmHWM) {:.1} MiB; samples {:.1}–{:.1} MiB",
            kib_to_mib(measured.peak_kib),
            kib_to_mib(measured.min_kib),
            kib_to_mib(measured.max_kib)
        );
        rounds.push(measured);
    }
    let of = |figure: fn(&Round) -> u64| spread(&rounds.iter().map(|r| kib_to_mib(figure(r))).collect::<Vec<_>>());
    let show = |(median, low, high): (f64, f64, f64)| format!("{median:.1} [{low:.1}–{high:.1}]");
    println!();
    println!("summary over {} round(s): median [min–max]; every job ran, none early", rounds.len());
    println!("  worker peak RSS (VmHWM), MiB      {}", show(of(|r| r.peak_kib)));
    println!("  smallest sample, MiB              {}", show(of(|r| r.min_kib)));
    println!("  largest sample, MiB               {}", show(of(|r| r.max_kib)));
    let under = rounds.iter().all(|r| r.peak_kib * 1024 < LIMIT_BYTES);
    let met = if under { "met" } else { "not met" };
    println!("  target peak under {} MB in every round: {met}", LIMIT_BYTES / 1_000_000);
    fleet::remove_logs()
}

/// One round on a queue of its own, deleted afterwards whatever happened.
async fn one_round(options: &Options, admin: &Admin, round: u32, label: &str) -> anyhow::Result<Round> {
    let queue = format!("bench-{}-{round}-memory", std::process::id());
    admin.declare_work_queue(&queue).await?;
    let measured = measure(options, admin, &queue, label).await;
    admin.delete(&[queue.clone(), lepus::internal::topology::dead_letter_queue(&queue)]).await;
    measured
}

async fn measure(options: &Options, admin: &Admin, queue: &str, label: &str) -> anyhow::Result<Round> {
    let jobs = QUEUED + DELAYED;
    let client_options = ClientOptions::default().publish_window(options.window as usize);
    let client =
        Client::connect_with(&options.amqp_url, client_options).await.context("the Lepus client cannot connect")?;
    let sent_at = Instant::now();
    let requests = (0..jobs).map(|index| {
        let now = Utc::now();
        let request = |due: chrono::DateTime<Utc>| {
            Request::new(Stamp { index, due_us: due.timestamp_micros(), sleep_ms: 0 }).queue(queue.to_owned())
        };
        match index.checked_sub(QUEUED) {
            None => request(now),
            Some(delayed) => {
                let delay = SOONEST + SPREAD.mul_f64((f64::from(delayed) + 0.5) / f64::from(DELAYED));
                let due = now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX);
                request(due).at(due)
            }
        }
    });
    let sent = client.enqueue_many(requests).await;
    client.close().await?;
    let failed: Vec<_> = sent.iter().filter_map(|sent| sent.as_ref().err()).collect();
    if let Some(first) = failed.first() {
        bail!("{} of {jobs} jobs were not enqueued; the first error: {first}", failed.len());
    }

    let mut workers = fleet::start(options, admin, queue, 1, options.concurrency).await?;
    let pid = workers[0].pid();
    let sampler = RssSampler::start(pid, SAMPLE_EVERY);
    let ran = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(format!("{label}: {jobs} jobs"), jobs.into(), vec![("ran", Arc::clone(&ran))]);
    let deadline = sent_at + SOONEST + SPREAD + DRAIN;
    let tally = runs::gather(&mut workers, jobs, deadline, &ran).await;
    let peak = workers[0].memory().map(|memory| memory.peak_kib);
    let rss = sampler.stop().await;
    fleet::stop(workers).await?;
    let (tally, peak_kib, rss) = (tally?, peak?, rss?);
    if let Some(earliest) = tally.late_us.iter().copied().filter(|late| *late < 0).min() {
        bail!("a job ran before it was due, {:.3} ms early", -earliest as f64 / 1000.0);
    }
    if tally.lost() > 0 {
        bail!("{} of {jobs} jobs never ran", tally.lost());
    }
    progress.finish(&format!("all ran; worker peak RSS {:.1} MiB", kib_to_mib(peak_kib)));
    Ok(Round { peak_kib, min_kib: rss.min_kib, max_kib: rss.max_kib })
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn mib_of_bytes(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
