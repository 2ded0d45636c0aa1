//! `--bulk`: bulk enqueue against the raw ceiling. Each round sends 100,000 `demo.noop` jobs to a
//! fresh quorum work queue (no worker consumes it) three times: with one
//! [`lepus::Client::enqueue_many`], and with raw lapin's confirmed publishes ([`RawProducer`], as
//! in phase (a)) of the very headers and body of a Lepus job, and of a bare 68-byte body with no
//! properties, the same window of publishes awaiting their confirm on every side; which goes
//! first turns with each round. Each side is timed from just before its first publish to its last
//! confirm; its queue must then hold every job, once.
//!
//! The target compares Lepus with raw lapin sending the same job. The bare body is not a job (no
//! task name, no id, no content type: no worker could run it); what it shows beside the others
//! is what the broker charges for the properties a Celery job carries.

use crate::admin::Admin;
use crate::figures::{rate, spread};
use crate::options::Options;
use crate::proc_status;
use crate::producer::Producer;
use crate::progress::Progress;
use crate::raw_producer::RawProducer;
use anyhow::{Context, bail};
use lepus::{Client, ClientOptions, Request};
use lepus_demo::jobs::Noop;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

const JOBS: u32 = 100_000;

/// How long a side waits after the previous one's queue was deleted: the broker frees a quorum
/// queue of 100,000 messages in the background, which slowed whichever side came next (one round
/// measured Lepus at 26k jobs/s against 34k-36k in the others).
const SETTLE: Duration = Duration::from_secs(3);

/// Lepus's rate over raw lapin's, sending the same job, that the mode aims at.
const TARGET: f64 = 0.8;

/// Who sends, and what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    /// Raw lapin, a bare body with no properties.
    Bare,
    /// Raw lapin, the very headers and body of a Lepus job.
    Same,
    /// Lepus's `enqueue_many`.
    Lepus,
}

impl Sender {
    const ALL: [Sender; 3] = [Sender::Bare, Sender::Same, Sender::Lepus];

    fn tag(self) -> &'static str {
        match self {
            Sender::Bare => "raw-bare",
            Sender::Same => "raw-same",
            Sender::Lepus => "lepus",
        }
    }
}

impl fmt::Display for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sender::Bare => "raw lapin, bare body",
            Sender::Same => "raw lapin, Lepus's job",
            Sender::Lepus => "Lepus enqueue_many",
        })
    }
}

pub(crate) async fn run(options: &Options, admin: &Admin) -> anyhow::Result<()> {
    println!("lepus-bench --bulk: Client::enqueue_many against raw lapin's confirmed publishes, in one run");
    println!("  each side: {JOBS} jobs to a fresh quorum work queue declared by lepus::WorkQueue, no consumer,");
    println!(
        "    persistent, mandatory, publisher confirms, up to {} publishes awaiting their confirm",
        options.window
    );
    println!("  raw lapin sends the very headers and body of a Lepus `demo.noop` job, and (for scale) a bare");
    println!("    {}-byte body with no properties, which no worker could run", crate::raw_producer::BODY.len());
    println!("  timed from just before the first publish to the last confirm; each queue must then hold");
    println!("    exactly {JOBS} messages; {} round(s), which side goes first turning each round", options.rounds);
    println!();
    let mut rounds: Vec<Round> = Vec::new();
    for round in 1..=options.rounds {
        let mut order = Sender::ALL;
        order.rotate_left((round as usize - 1) % Sender::ALL.len());
        let mut sides = Round::default();
        for sender in order {
            let queue = format!("bench-{}-{round}-bulk-{}", std::process::id(), sender.tag());
            let label = format!("round {round}/{}, {sender}", options.rounds);
            let measured = measure(options, admin, &queue, sender, &label).await;
            let measured = measured.with_context(|| label.clone())?;
            match sender {
                Sender::Bare => sides.bare = measured,
                Sender::Same => sides.same = measured,
                Sender::Lepus => sides.lepus = measured,
            }
        }
        let Round { bare, same, lepus } = sides;
        println!(
            "round {round} of {}: Lepus {:.0} jobs/s; raw lapin {:.0} with the same job, {:.0} with a bare body; \
             Lepus/raw {:.2} (same job), {:.2} (bare body)",
            options.rounds,
            lepus.jobs_per_s,
            same.jobs_per_s,
            bare.jobs_per_s,
            lepus.jobs_per_s / same.jobs_per_s,
            lepus.jobs_per_s / bare.jobs_per_s
        );
        rounds.push(sides);
    }
    let of = |figure: fn(&Round) -> f64| spread(&rounds.iter().map(figure).collect::<Vec<_>>());
    let show = |(median, low, high): (f64, f64, f64), decimals: usize| {
        format!("{median:.decimals$} [{low:.decimals$}–{high:.decimals$}]")
    };
    println!();
    println!("summary over {} round(s): median [min–max]", options.rounds);
    println!("  Lepus enqueue_many, jobs/s                     {}", show(of(|r| r.lepus.jobs_per_s), 0));
    println!("  raw lapin, the same job, jobs/s                {}", show(of(|r| r.same.jobs_per_s), 0));
    println!("  raw lapin, a bare body, jobs/s                 {}", show(of(|r| r.bare.jobs_per_s), 0));
    let ratio = of(|r| r.lepus.jobs_per_s / r.same.jobs_per_s);
    println!("  Lepus/raw, the same job                        {}", show(ratio, 2));
    println!(
        "  Lepus/raw, a bare body                         {}",
        show(of(|r| r.lepus.jobs_per_s / r.bare.jobs_per_s), 2)
    );
    println!(
        "  raw same job / raw bare body (the properties)  {}",
        show(of(|r| r.same.jobs_per_s / r.bare.jobs_per_s), 2)
    );
    println!("  sender CPU per job, µs, Lepus                  {}", show(of(|r| r.lepus.cpu_us), 1));
    println!("  sender CPU per job, µs, raw, the same job      {}", show(of(|r| r.same.cpu_us), 1));
    println!("  sender CPU per job, µs, raw, a bare body       {}", show(of(|r| r.bare.cpu_us), 1));
    let met = if ratio.0 >= TARGET { "met" } else { "not met" };
    println!("  target Lepus/raw (the same job) ≥ {TARGET}: {met}");
    Ok(())
}

/// What each side measured in one round.
#[derive(Debug, Clone, Copy, Default)]
struct Round {
    bare: Sent,
    same: Sent,
    lepus: Sent,
}

/// What one side measured in one round.
#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    jobs_per_s: f64,
    /// CPU time (user and system) this process spent sending, per job.
    cpu_us: f64,
}

/// One side's rate on a queue of its own, deleted afterwards whatever happened.
async fn measure(options: &Options, admin: &Admin, queue: &str, sender: Sender, label: &str) -> anyhow::Result<Sent> {
    tokio::time::sleep(SETTLE).await;
    admin.declare_work_queue(queue).await?;
    let reply_queue = format!("{queue}.reply");
    let progress = Progress::start(format!("{label}: {JOBS} jobs"), JOBS.into(), Vec::new());
    let cpu_before = proc_status::cpu_seconds(std::process::id())?;
    let sent = match sender {
        Sender::Bare => send_raw(options, queue, &reply_queue, false).await,
        Sender::Same => send_raw(options, queue, &reply_queue, true).await,
        Sender::Lepus => send_lepus(options, queue).await,
    };
    let cpu = proc_status::cpu_seconds(std::process::id())? - cpu_before;
    let held = admin.message_count(queue).await;
    admin.delete(&[queue.to_owned(), lepus::internal::topology::dead_letter_queue(queue), reply_queue]).await;
    let elapsed = sent?;
    let held = held?;
    if held != JOBS {
        bail!("{sender} had {JOBS} jobs confirmed, but the queue holds {held}");
    }
    let jobs_per_s = rate(JOBS.into(), elapsed);
    let cpu_us = cpu * 1e6 / f64::from(JOBS);
    progress.finish(&format!(
        "{jobs_per_s:.0} jobs/s (all confirmed after {:.2} s), sender CPU {cpu_us:.1} µs a job",
        elapsed.as_secs_f64()
    ));
    Ok(Sent { jobs_per_s, cpu_us })
}

async fn send_raw(options: &Options, queue: &str, reply_queue: &str, same_job: bool) -> anyhow::Result<Duration> {
    let window = options.window as usize;
    let producer = RawProducer::connect(&options.amqp_url, queue, reply_queue, window, same_job)
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
