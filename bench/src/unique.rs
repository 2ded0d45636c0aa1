//! `--unique`: what unique jobs cost. Each round sends N `demo.noop` jobs twice, each time to a
//! fresh queue and a fresh stock Lepus worker, with `Client::enqueue` and up to `--window`
//! enqueues in flight: once plain, once each unique by a key of its own (`Request::unique`, so
//! every enqueue takes a lock, and every job's end releases it); which goes first alternates.
//!
//! - enqueue: jobs/s from just before the first enqueue to the last one returned;
//! - end to end: jobs/s from just before the first enqueue to the worker's report of N acks
//!   (the worker releases each lock before it acks the job).
//!
//! The ratios are unique over plain. The lock and holder queues are deleted after each run.

use crate::admin::Admin;
use crate::figures::{rate, spread};
use crate::options::Options;
use crate::stock_worker;
use anyhow::Context;
use lepus::internal::topology::{dead_letter_queue, unique_holder_queue, unique_lock_queue};
use lepus::{Client, Request};
use lepus_demo::jobs::Noop;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The ttl of the bench's locks: longer than a run, so that every lock is released by its job.
const TTL: Duration = Duration::from_secs(300);

/// The two ways of sending the same jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sending {
    Plain,
    Unique,
}

impl Sending {
    fn tag(self) -> &'static str {
        match self {
            Sending::Plain => "plain",
            Sending::Unique => "unique",
        }
    }
}

/// One run's figures, jobs/s.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    enqueue: f64,
    end_to_end: f64,
}

/// Runs the rounds and prints each one's figures and the summary.
pub(crate) async fn run(options: &Options, admin: &Admin) -> anyhow::Result<()> {
    let n = options.jobs();
    let pid = std::process::id();
    let logs = std::env::temp_dir().join(format!("lepus-bench-{pid}"));
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    println!(
        "lepus-bench --unique: {n} demo.noop jobs, plain and unique (a key each), Client::enqueue with {} in flight, \
         worker concurrency {}, {} rounds",
        options.window, options.concurrency, options.rounds
    );
    let (mut enqueue_ratios, mut end_ratios) = (Vec::new(), Vec::new());
    for round in 1..=options.rounds {
        let order = if round % 2 == 1 { [Sending::Plain, Sending::Unique] } else { [Sending::Unique, Sending::Plain] };
        let (mut plain, mut unique) = (Figures::default(), Figures::default());
        for sending in order {
            let queue = format!("bench-{pid}-{round}-{}", sending.tag());
            let log = logs.join(format!("round-{round}-{}-worker.log", sending.tag()));
            let figures = measure(options, admin, &queue, &log, sending, n)
                .await
                .with_context(|| format!("round {round}, {}", sending.tag()))?;
            println!(
                "  round {round}/{}: {:<6} enqueue {:>7.0} jobs/s, end to end {:>7.0} jobs/s",
                options.rounds,
                sending.tag(),
                figures.enqueue,
                figures.end_to_end
            );
            match sending {
                Sending::Plain => plain = figures,
                Sending::Unique => unique = figures,
            }
        }
        let (enqueue, end) = (unique.enqueue / plain.enqueue, unique.end_to_end / plain.end_to_end);
        println!("  round {round}/{}: unique / plain = {enqueue:.2} (enqueue), {end:.2} (end to end)", options.rounds);
        enqueue_ratios.push(enqueue);
        end_ratios.push(end);
    }
    for (what, ratios) in [("enqueue", &enqueue_ratios), ("end to end", &end_ratios)] {
        let (median, min, max) = spread(ratios);
        println!(
            "unique / plain jobs/s, {what}: median {median:.2} (min {min:.2}, max {max:.2}) over {} rounds",
            ratios.len()
        );
    }
    drop(std::fs::remove_dir_all(&logs));
    Ok(())
}

/// One side of one round on a fresh queue and worker. Its queues (and locks) go afterwards.
async fn measure(
    options: &Options,
    admin: &Admin,
    queue: &str,
    log: &Path,
    sending: Sending,
    n: u64,
) -> anyhow::Result<Figures> {
    admin.declare_work_queue(queue).await?;
    let keys: Vec<String> = match sending {
        Sending::Plain => Vec::new(),
        Sending::Unique => (0..n).map(|i| format!("{queue}-{i}")).collect(),
    };
    let measured = timed(options, admin, queue, log, &keys, n).await;
    let mut queues = vec![queue.to_owned(), dead_letter_queue(queue)];
    queues.extend(keys.iter().flat_map(|key| [unique_lock_queue(key), unique_holder_queue(key)]));
    admin.delete(&queues).await;
    measured
}

async fn timed(
    options: &Options,
    admin: &Admin,
    queue: &str,
    log: &Path,
    keys: &[String],
    n: u64,
) -> anyhow::Result<Figures> {
    let mut worker = stock_worker::start(options, admin, queue, queue, n, log, &[]).await?;
    let limit = stock_worker::time_limit(n);
    let client = Client::connect(&options.amqp_url).await?;
    let window = Arc::new(Semaphore::new(options.window as usize));
    let mut sending = JoinSet::new();
    let start = Instant::now();
    for i in 0..n {
        let permit = Arc::clone(&window).acquire_owned().await?;
        let mut request = Request::new(Noop {}).queue(queue.to_owned());
        if let Some(key) = usize::try_from(i).ok().and_then(|i| keys.get(i)) {
            request = request.unique(key, TTL);
        }
        let client = client.clone();
        sending.spawn(async move {
            let enqueued = client.enqueue(request).await;
            drop(permit);
            enqueued
        });
        while let Some(done) = sending.try_join_next() {
            done??;
        }
    }
    while let Some(done) = sending.join_next().await {
        done??;
    }
    let enqueued = start.elapsed();
    client.close().await?;
    let done = worker.reached(n, limit).await?.saturating_duration_since(start);
    worker.stop().await?;
    Ok(Figures { enqueue: rate(n, enqueued), end_to_end: rate(n, done) })
}
