//! `--concurrency-key`: what a concurrency key costs. Each round sends the same N `demo.noop`
//! jobs twice, each time to a fresh queue and a fresh stock Lepus worker: once plain, once with
//! a concurrency key whose limit (`--key-limit`, default 1000) is above the worker's concurrency,
//! so the limit never holds a job back and what is measured is the price of taking and giving
//! back a slot per job (a channel of its own, a consumer, a close). Which goes first alternates
//! between rounds. Each side is timed from just before the first publish to the worker's report
//! of N acks; the ratio is keyed jobs/s over plain jobs/s. The key's slot queue is deleted after
//! each round.

use crate::admin::Admin;
use crate::figures::{rate, spread};
use crate::options::Options;
use crate::role::{Side, WorkerSpec};
use crate::worker_process::WorkerProcess;
use anyhow::Context;
use lepus::internal::topology::{dead_letter_queue, slot_queue};
use lepus::{Client, Concurrency, Request};
use lepus_demo::jobs::Noop;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How long a worker may take to attach its consumer, and how long it idles before the timing.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_secs(1);

/// Runs the rounds and prints each one's figures and the summary.
pub(crate) async fn run(options: &Options, admin: &Admin) -> anyhow::Result<()> {
    let n = options.jobs();
    let pid = std::process::id();
    let logs = std::env::temp_dir().join(format!("lepus-bench-{pid}"));
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    println!(
        "lepus-bench --concurrency-key: {n} demo.noop jobs, plain and with one concurrency key of limit {}, \
         worker concurrency {}, window {} jobs, {} rounds",
        options.key_limit, options.concurrency, options.window, options.rounds
    );
    let mut ratios = Vec::new();
    for round in 1..=options.rounds {
        let key = Concurrency::new(format!("bench-{pid}-{round}"), options.key_limit);
        let order = if round % 2 == 1 { [None, Some(&key)] } else { [Some(&key), None] };
        let (mut plain, mut keyed) = (0.0, 0.0);
        for concurrency in order {
            let tag = if concurrency.is_some() { "keyed" } else { "plain" };
            let queue = format!("bench-{pid}-{round}-{tag}");
            let log = logs.join(format!("round-{round}-{tag}-worker.log"));
            admin.declare_work_queue(&queue).await?;
            let measured = timed(options, admin, &queue, &log, concurrency, n).await;
            admin.delete(&[queue.clone(), dead_letter_queue(&queue)]).await;
            let jobs_per_s = measured.with_context(|| format!("round {round}, {tag}"))?;
            println!("  round {round}/{}: {tag:<7} {jobs_per_s:>8.0} jobs/s", options.rounds);
            if concurrency.is_some() {
                keyed = jobs_per_s;
            } else {
                plain = jobs_per_s;
            }
        }
        admin.delete(&[slot_queue(&key)]).await;
        let ratio = keyed / plain;
        println!("  round {round}/{}: keyed / plain = {ratio:.2}", options.rounds);
        ratios.push(ratio);
    }
    let (median, min, max) = spread(&ratios);
    println!("keyed / plain jobs/s: median {median:.2} (min {min:.2}, max {max:.2}) over {} rounds", ratios.len());
    drop(std::fs::remove_dir_all(&logs));
    Ok(())
}

/// One side of one round on `queue` with a fresh worker; its jobs/s.
async fn timed(
    options: &Options,
    admin: &Admin,
    queue: &str,
    log: &Path,
    concurrency: Option<&Concurrency>,
    n: u64,
) -> anyhow::Result<f64> {
    let spec = WorkerSpec {
        side: Side::Lepus,
        amqp_url: options.amqp_url.clone(),
        queue: queue.to_owned(),
        concurrency: options.concurrency,
        targets: vec![n],
        celery_wire: false,
        metrics_addr: None,
        events: false,
        service: None,
    };
    let mut worker = WorkerProcess::start(&spec, log)?;
    admin.await_consumer(queue, &mut worker, READY_TIMEOUT).await?;
    tokio::time::sleep(SETTLE).await;
    let limit =
        Duration::from_secs(60) + Duration::from_millis(10).saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
    let start = Instant::now();
    send(&options.amqp_url, queue, n, concurrency, options.window as usize).await?;
    let done = worker.reached(n, limit).await?.saturating_duration_since(start);
    worker.stop().await?;
    Ok(rate(n, done))
}

/// Sends `n` `demo.noop` jobs to `queue`, with `concurrency` if given, `window` awaiting their
/// confirm at once.
async fn send(url: &str, queue: &str, n: u64, concurrency: Option<&Concurrency>, window: usize) -> anyhow::Result<()> {
    let client = Client::connect(url).await?;
    let in_flight = Arc::new(Semaphore::new(window));
    let mut sending = JoinSet::new();
    for _ in 0..n {
        let permit = Arc::clone(&in_flight).acquire_owned().await?;
        let mut request = Request::new(Noop {}).queue(queue);
        if let Some(concurrency) = concurrency {
            request = request.concurrency_key(concurrency.key.clone(), concurrency.limit);
        }
        let client = client.clone();
        sending.spawn(async move {
            let sent = client.enqueue(request).await;
            drop(permit);
            sent.map(drop)
        });
        while let Some(done) = sending.try_join_next() {
            done??;
        }
    }
    while let Some(done) = sending.join_next().await {
        done??;
    }
    client.close().await?;
    Ok(())
}
