//! `--bulk`: bulk enqueue against the raw ceiling. Each round sends 100,000 `demo.noop` jobs to a
//! fresh quorum work queue (no worker consumes it) twice: with one [`lepus::Client::enqueue_many`]
//! and with raw lapin's confirmed publishes ([`RawProducer`], as in phase (a)), the same window
//! of publishes awaiting their confirm on both sides, alternating which goes first. Each side is
//! timed from just before its first publish to its last confirm; its queue must then hold every
//! job, once.

use crate::admin::Admin;
use crate::figures::{rate, spread};
use crate::options::Options;
use crate::proc_status;
use crate::producer::Producer;
use crate::progress::Progress;
use crate::raw_producer::RawProducer;
use crate::role::Side;
use anyhow::{Context, bail};
use lepus::{Client, ClientOptions, Request};
use lepus_demo::jobs::Noop;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

const JOBS: u32 = 100_000;

/// Lepus's rate over raw lapin's that the mode aims at.
const TARGET: f64 = 0.8;

pub(crate) async fn run(options: &Options, admin: &Admin) -> anyhow::Result<()> {
    println!("lepus-bench --bulk: Client::enqueue_many against raw lapin's confirmed publishes, in one run");
    println!("  both sides: {JOBS} jobs to a fresh quorum work queue declared by lepus::WorkQueue, no consumer,");
    println!(
        "    persistent, mandatory, publisher confirms, up to {} publishes awaiting their confirm",
        options.window
    );
    println!("  timed from just before the first publish to the last confirm; each queue must then hold");
    println!("    exactly {JOBS} messages; {} round(s), alternating which side goes first", options.rounds);
    if options.raw_headers {
        println!("  raw sends the very headers and body of a Lepus `demo.noop` job (--raw-headers)");
    } else {
        println!(
            "  raw sends a bare {}-byte body, Lepus `demo.noop` with Celery v2 headers",
            crate::raw_producer::BODY.len()
        );
    }
    println!();
    let mut rounds: Vec<[Sent; 2]> = Vec::new();
    for round in 1..=options.rounds {
        let order = if round % 2 == 1 { [Side::Raw, Side::Lepus] } else { [Side::Lepus, Side::Raw] };
        let mut sides = [Sent::default(); 2];
        for side in order {
            let queue = format!("bench-{}-{round}-bulk-{}", std::process::id(), tag(side));
            let label = format!("round {round}/{}, {side}", options.rounds);
            let measured = measure(options, admin, &queue, side, &label).await;
            sides[usize::from(side == Side::Lepus)] = measured.with_context(|| label.clone())?;
        }
        let [raw, lepus] = sides;
        println!(
            "round {round} of {} ({} first): raw lapin {:.0} jobs/s, Lepus enqueue_many {:.0} jobs/s, Lepus/raw {:.2}",
            options.rounds,
            order[0],
            raw.jobs_per_s,
            lepus.jobs_per_s,
            lepus.jobs_per_s / raw.jobs_per_s
        );
        rounds.push(sides);
    }
    let of = |figure: fn(&[Sent; 2]) -> f64| spread(&rounds.iter().map(figure).collect::<Vec<_>>());
    let show = |(median, low, high): (f64, f64, f64), decimals: usize| {
        format!("{median:.decimals$} [{low:.decimals$}–{high:.decimals$}]")
    };
    println!();
    println!("summary over {} round(s): median [min–max]", options.rounds);
    println!("  raw lapin, confirmed publishes, jobs/s      {}", show(of(|r| r[0].jobs_per_s), 0));
    println!("  Lepus enqueue_many, jobs/s                  {}", show(of(|r| r[1].jobs_per_s), 0));
    let ratio = of(|r| r[1].jobs_per_s / r[0].jobs_per_s);
    println!("  Lepus/raw                                   {}", show(ratio, 2));
    println!("  sender CPU per job, µs, raw lapin           {}", show(of(|r| r[0].cpu_us), 1));
    println!("  sender CPU per job, µs, Lepus               {}", show(of(|r| r[1].cpu_us), 1));
    let met = if ratio.0 >= TARGET { "met" } else { "not met" };
    println!("  target Lepus/raw ≥ {TARGET}: {met}");
    Ok(())
}

/// What one side measured in one round.
#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    jobs_per_s: f64,
    /// CPU time (user and system) this process spent sending, per job.
    cpu_us: f64,
}

fn tag(side: Side) -> &'static str {
    match side {
        Side::Raw => "raw",
        Side::Lepus => "lepus",
    }
}

/// One side's rate on a queue of its own, deleted afterwards whatever happened.
async fn measure(options: &Options, admin: &Admin, queue: &str, side: Side, label: &str) -> anyhow::Result<Sent> {
    admin.declare_work_queue(queue).await?;
    let reply_queue = format!("{queue}.reply");
    let progress = Progress::start(format!("{label}: {JOBS} jobs"), JOBS.into(), Vec::new());
    let cpu_before = proc_status::cpu_seconds(std::process::id())?;
    let sent = match side {
        Side::Raw => send_raw(options, queue, &reply_queue).await,
        Side::Lepus => send_lepus(options, queue).await,
    };
    let cpu = proc_status::cpu_seconds(std::process::id())? - cpu_before;
    let held = admin.message_count(queue).await;
    admin.delete(&[queue.to_owned(), lepus::internal::topology::dead_letter_queue(queue), reply_queue]).await;
    let elapsed = sent?;
    let held = held?;
    if held != JOBS {
        bail!("{side} had {JOBS} jobs confirmed, but the queue holds {held}");
    }
    let jobs_per_s = rate(JOBS.into(), elapsed);
    let cpu_us = cpu * 1e6 / f64::from(JOBS);
    progress.finish(&format!(
        "{jobs_per_s:.0} jobs/s (all confirmed after {:.2} s), sender CPU {cpu_us:.1} µs a job",
        elapsed.as_secs_f64()
    ));
    Ok(Sent { jobs_per_s, cpu_us })
}

async fn send_raw(options: &Options, queue: &str, reply_queue: &str) -> anyhow::Result<Duration> {
    let window = options.window as usize;
    let producer = RawProducer::connect(&options.amqp_url, queue, reply_queue, window, options.raw_headers)
        .await
        .context("the raw producer cannot connect")?;
    let start = Instant::now();
    let sent = producer.send(JOBS.into(), &Arc::new(AtomicU64::new(0))).await;
    let elapsed = start.elapsed();
    producer.close().await?;
    sent.map(|()| elapsed)
}

async fn send_lepus(options: &Options, queue: &str) -> anyhow::Result<Duration> {
    let client_options = ClientOptions::default().publish_window(options.window as usize);
    let client =
        Client::connect_with(&options.amqp_url, client_options).await.context("the Lepus client cannot connect")?;
    let start = Instant::now();
    let sent = client.enqueue_many((0..JOBS).map(|_| Request::new(Noop {}).queue(queue.to_owned()))).await;
    let elapsed = start.elapsed();
    client.close().await?;
    let failed: Vec<_> = sent.iter().filter_map(|sent| sent.as_ref().err()).collect();
    if let Some(first) = failed.first() {
        bail!("{} of {JOBS} jobs were not enqueued; the first error: {first}", failed.len());
    }
    Ok(elapsed)
}
