//! `--concurrency-key`: what a concurrency key costs. Each round sends the same N `demo.noop`
//! jobs twice, each time to a fresh queue and a fresh stock Lepus worker: once plain, once with
//! a concurrency key whose limit (`--key-limit`, default 1000) is above the worker's concurrency,
//! so the limit never holds a job back and what is measured is the price of taking and giving
//! back a slot per job (a `basic.get` and a reject on the worker's slot channel). Which goes
//! first alternates between rounds. Each side is timed from just before the first publish to the worker's report
//! of N acks; the ratio is keyed jobs/s over plain jobs/s. The key's slot queue is deleted after
//! each round.

use crate::admin::Admin;
use crate::figures::{rate, spread};
use crate::options::Options;
use crate::stock_worker;
use anyhow::Context;
use lepus::internal::topology::{dead_letter_queue, slot_queue};
use lepus::{Client, ClientOptions, Concurrency, Request};
use lepus_demo::jobs::Noop;
use std::path::Path;
use std::time::Instant;

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
    let mut worker = stock_worker::start(options, admin, queue, queue, n, log, &[]).await?;
    let limit = stock_worker::time_limit(n);
    let start = Instant::now();
    send(&options.amqp_url, queue, n, concurrency, options.window as usize).await?;
    let done = worker.reached(n, limit).await?.saturating_duration_since(start);
    worker.stop().await?;
    Ok(rate(n, done))
}

/// Sends `n` `demo.noop` jobs to `queue`, with `concurrency` if given, `window` awaiting their
/// confirm at once (`Client::enqueue_many`, as `--rate-limit` sends).
async fn send(url: &str, queue: &str, n: u64, concurrency: Option<&Concurrency>, window: usize) -> anyhow::Result<()> {
    let client = Client::connect_with(url, ClientOptions::default().publish_window(window)).await?;
    let requests = (0..n).map(|_| {
        let request = Request::new(Noop {}).queue(queue);
        match concurrency {
            Some(concurrency) => request.concurrency_key(concurrency.key.clone(), concurrency.limit),
            None => request,
        }
    });
    let sent = client.enqueue_many(requests).await;
    client.close().await?;
    if let Some(Err(e)) = sent.into_iter().find(Result::is_err) {
        return Err(e.into());
    }
    Ok(())
}
