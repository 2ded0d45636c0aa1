//! `--scale`: throughput as worker processes are added, for jobs that wait rather than compute.
//! Each round runs 1, 2 and 4 Lepus workers (in that order, reversed every other round), each on
//! a fresh queue, each worker running 25 jobs at once (prefetch 25); once all consume, 5,000
//! `bench.stamp` jobs per worker are sent with one [`lepus::Client::enqueue_many`], each sleeping
//! 10 to 50 ms (evenly spread, 30 ms on average), so that one worker runs about 830 jobs/s and
//! four about 3,300: sleep-bound, well below what the broker and two cores can carry. Throughput
//! is the steady rate: jobs run from the moment the last one is confirmed (before that, sending
//! them takes broker and CPU time from the workers, and longer the more jobs there are) to the
//! moment 90 % of them have run (after that, fewer jobs are left than the workers can run at
//! once). Each worker's share is the jobs it ran. Every job must run, else the run fails.

use crate::admin::Admin;
use crate::figures::spread;
use crate::fleet;
use crate::options::Options;
use crate::progress::Progress;
use crate::runs::{self, Tally};
use crate::stamp::Stamp;
use crate::worker_process::WorkerProcess;
use anyhow::{Context, bail};
use chrono::Utc;
use lepus::{Client, ClientOptions, Request};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// The worker counts compared, and the throughput each should reach against one worker.
const WORKERS: [(usize, Option<f64>); 3] = [(1, None), (2, Some(1.9)), (4, Some(3.6))];

const JOBS_PER_WORKER: u32 = 5_000;

const CONCURRENCY: u16 = 25;

/// How far a worker's share of the jobs may be from the mean share, as a fraction of it.
const SHARE_TOLERANCE: f64 = 0.10;

/// The steady rate is measured until this fraction of the jobs has run.
const STEADY_UNTIL: f64 = 0.9;

/// How long the started workers idle before the jobs are sent.
const SETTLE: Duration = Duration::from_secs(1);

/// What one worker count measured in one round.
#[derive(Debug, Clone)]
struct Measured {
    jobs_per_s: f64,
    /// Each worker's jobs over the mean, minus 1.
    share_deviations: Vec<f64>,
}

pub(crate) async fn run(options: &Options, admin: &Admin) -> anyhow::Result<()> {
    println!("lepus-bench --scale: sleep-bound jobs through 1, 2 and 4 Lepus worker processes");
    println!("  {JOBS_PER_WORKER} `bench.stamp` jobs per worker, each sleeping 10–50 ms (30 ms on average);");
    println!("    each worker runs {CONCURRENCY} jobs at once (prefetch {CONCURRENCY}); jobs sent with one");
    println!("    Client::enqueue_many once every worker consumes, up to {} awaiting their confirm;", options.window);
    println!("  throughput: jobs run from the last confirm to the moment 90 % of them have run;");
    println!("    every job must run (else the run fails);");
    println!("    {} round(s), the order of worker counts reversed every other round", options.rounds);
    println!();
    let mut rounds: Vec<Vec<Measured>> = Vec::new();
    for round in 1..=options.rounds {
        let mut order: Vec<usize> = (0..WORKERS.len()).collect();
        if round % 2 == 0 {
            order.reverse();
        }
        let mut measured = vec![None; WORKERS.len()];
        for at in order {
            let workers = WORKERS[at].0;
            let label = format!("round {round}/{}, {workers} worker(s)", options.rounds);
            let figures = one_count(options, admin, round, workers, &label).await.with_context(|| label.clone())?;
            measured[at] = Some(figures);
        }
        let measured: Vec<Measured> = measured.into_iter().flatten().collect();
        let one = measured[0].jobs_per_s;
        let shown: Vec<String> = WORKERS
            .iter()
            .zip(&measured)
            .map(|((workers, _), m)| {
                format!(
                    "{workers}: {:.0} jobs/s (×{:.2}, shares ±{:.1} %)",
                    m.jobs_per_s,
                    m.jobs_per_s / one,
                    100.0 * worst(m)
                )
            })
            .collect();
        println!("round {round} of {}: {}", options.rounds, shown.join("; "));
        rounds.push(measured);
    }
    summary(&rounds);
    fleet::remove_logs()
}

fn summary(rounds: &[Vec<Measured>]) {
    println!();
    println!("summary over {} round(s): median [min–max]", rounds.len());
    let met = |yes: bool| if yes { "met" } else { "not met" };
    for (at, (workers, target)) in WORKERS.iter().enumerate() {
        let (rate, low, high) = spread(&rounds.iter().map(|r| r[at].jobs_per_s).collect::<Vec<_>>());
        let (ratio, ratio_low, ratio_high) =
            spread(&rounds.iter().map(|r| r[at].jobs_per_s / r[0].jobs_per_s).collect::<Vec<_>>());
        let (share, _, share_high) = spread(&rounds.iter().map(|r| worst(&r[at])).collect::<Vec<_>>());
        let mut line = format!(
            "  {workers} worker(s): {rate:.0} [{low:.0}–{high:.0}] jobs/s, ×{ratio:.2} [{ratio_low:.2}–{ratio_high:.2}] one \
             worker's; largest share off the mean {:.1} % [worst round {:.1} %]",
            100.0 * share,
            100.0 * share_high
        );
        if let Some(target) = target {
            line.push_str(&format!("; target ×{target}: {}", met(ratio >= *target)));
        }
        println!("{line}");
    }
    let fair = rounds.iter().flatten().all(|m| worst(m) <= SHARE_TOLERANCE);
    println!(
        "  target every worker's share within ±{:.0} % of the mean, every run: {}",
        100.0 * SHARE_TOLERANCE,
        met(fair)
    );
}

/// The largest deviation of a worker's share from the mean, as a fraction of the mean.
fn worst(measured: &Measured) -> f64 {
    measured.share_deviations.iter().map(|d| d.abs()).fold(0.0, f64::max)
}

/// One worker count in one round, on a queue of its own, deleted afterwards whatever happened.
async fn one_count(
    options: &Options,
    admin: &Admin,
    round: u32,
    count: usize,
    label: &str,
) -> anyhow::Result<Measured> {
    let queue = format!("bench-{}-{round}-scale-{count}", std::process::id());
    admin.declare_work_queue(&queue).await?;
    let measured = async {
        let mut workers = fleet::start(options, admin, &queue, count, CONCURRENCY).await?;
        let measured = measure(options, &queue, &mut workers, label).await;
        let stopped = fleet::stop(workers).await;
        measured.and_then(|m| stopped.map(|()| m))
    }
    .await;
    admin.delete(&[queue.clone(), lepus::internal::topology::dead_letter_queue(&queue)]).await;
    measured
}

async fn measure(
    options: &Options,
    queue: &str,
    workers: &mut [WorkerProcess],
    label: &str,
) -> anyhow::Result<Measured> {
    let jobs = JOBS_PER_WORKER * workers.len() as u32;
    let client_options = ClientOptions::default().publish_window(options.window as usize);
    let client =
        Client::connect_with(&options.amqp_url, client_options).await.context("the Lepus client cannot connect")?;
    tokio::time::sleep(SETTLE).await;
    let ran = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(format!("{label}: {jobs} jobs"), jobs.into(), vec![("ran", Arc::clone(&ran))]);
    let requests = (0..jobs).map(|index| {
        let stamp = Stamp { index, due_us: Utc::now().timestamp_micros(), sleep_ms: 10 + index * 7 % 41 };
        Request::new(stamp).queue(queue.to_owned())
    });
    // A generous bound: ten times the expected run.
    let expected = Duration::from_millis(30 * u64::from(JOBS_PER_WORKER) / u64::from(CONCURRENCY));
    let deadline = Instant::now() + 10 * expected;
    let sending = async {
        let sent = client.enqueue_many(requests).await;
        (sent, Instant::now())
    };
    let ((sent, confirmed), tally) = tokio::join!(sending, runs::gather(workers, jobs, deadline, &ran));
    let tally = tally?;
    client.close().await?;
    let failed: Vec<_> = sent.iter().filter_map(|sent| sent.as_ref().err()).collect();
    if let Some(first) = failed.first() {
        bail!("{} of {jobs} jobs were not enqueued; the first error: {first}", failed.len());
    }
    if tally.lost() > 0 {
        bail!("{} of {jobs} jobs never ran", tally.lost());
    }
    let measured = figures(&tally, confirmed, jobs)?;
    let shares: Vec<String> = tally.per_worker.iter().map(u32::to_string).collect();
    progress.finish(&format!("{:.0} jobs/s; jobs per worker {}", measured.jobs_per_s, shares.join(", ")));
    Ok(measured)
}

/// The steady rate between the last confirm and the moment [`STEADY_UNTIL`] of the jobs have
/// run, and the shares.
fn figures(tally: &Tally, confirmed: Instant, jobs: u32) -> anyhow::Result<Measured> {
    let until_rank = (f64::from(jobs) * STEADY_UNTIL).ceil() as usize;
    let until = tally.arrivals.get(until_rank.saturating_sub(1)).copied().unwrap_or(confirmed);
    if until <= confirmed {
        bail!("sending the jobs took until {:.0} % of them had run: no steady rate to measure", 100.0 * STEADY_UNTIL);
    }
    let steady = tally.arrivals.iter().filter(|arrived| **arrived > confirmed && **arrived <= until).count();
    let mean = f64::from(jobs) / tally.per_worker.len() as f64;
    Ok(Measured {
        jobs_per_s: steady as f64 / (until - confirmed).as_secs_f64(),
        share_deviations: tally.per_worker.iter().map(|ran| f64::from(*ran) / mean - 1.0).collect(),
    })
}
