//! `--rate-limit`: what a rate limit costs when it is not the cap. Each round sends N `demo.noop`
//! jobs twice, each time to a fresh queue and a fresh stock Lepus worker: first plainly, then
//! each with a rate limit (`x-lepus-rate-limit`) set at twice the plain side's jobs/s under a
//! rate key of the round's own, so the worker takes a token from the broker before every job and
//! its own process issues the tokens.
//!
//! Both sides: from just before the first publish (`Client::enqueue_many`, the same window) to
//! the worker's report of N acks. The ratio is limited jobs/s over plain jobs/s. The key's
//! queues are deleted after each round.

use crate::admin::Admin;
use crate::figures::{rate, spread};
use crate::options::Options;
use crate::stock_worker;
use anyhow::Context;
use lepus::internal::topology;
use lepus::{Client, ClientOptions, Rate, Request};
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
        "lepus-bench --rate-limit: {n} demo.noop jobs, plain then under a rate limit of twice the plain jobs/s, \
         worker concurrency {}, window {} jobs, {} rounds",
        options.concurrency, options.window, options.rounds
    );
    let mut ratios = Vec::new();
    for round in 1..=options.rounds {
        let queue = format!("bench-{pid}-{round}-plain");
        let log = logs.join(format!("round-{round}-plain-worker.log"));
        let plain =
            measure(options, admin, &queue, &log, None, n).await.with_context(|| format!("round {round}, plain"))?;
        println!("  round {round}/{}: plain   {plain:>8.0} jobs/s", options.rounds);
        let limit = Rate::per_sec(((plain * 2.0) as u32).max(1000));
        let key = format!("bench-{pid}-{round}");
        let queue = format!("bench-{pid}-{round}-limited");
        let log = logs.join(format!("round-{round}-limited-worker.log"));
        let measured = measure(options, admin, &queue, &log, Some((limit, key.as_str())), n).await;
        admin
            .delete(&[
                topology::rate_token_queue(&key),
                topology::rate_issuer_queue(&key),
                topology::rate_lock_queue(&key),
            ])
            .await;
        let limited = measured.with_context(|| format!("round {round}, limited"))?;
        let ratio = limited / plain;
        println!(
            "  round {round}/{}: limited {limited:>8.0} jobs/s (limit {limit}); limited / plain = {ratio:.2}",
            options.rounds
        );
        ratios.push(ratio);
    }
    let (median, min, max) = spread(&ratios);
    println!("limited / plain jobs/s: median {median:.2} (min {min:.2}, max {max:.2}) over {} rounds", ratios.len());
    drop(std::fs::remove_dir_all(&logs));
    Ok(())
}

/// One side of one round on a fresh queue and worker; its jobs/s. The queues go afterwards.
async fn measure(
    options: &Options,
    admin: &Admin,
    queue: &str,
    log: &Path,
    limit: Option<(Rate, &str)>,
    n: u64,
) -> anyhow::Result<f64> {
    admin.declare_work_queue(queue).await?;
    let measured = timed(options, admin, queue, log, limit, n).await;
    admin.delete(&[queue.to_owned(), topology::dead_letter_queue(queue)]).await;
    measured
}

async fn timed(
    options: &Options,
    admin: &Admin,
    queue: &str,
    log: &Path,
    limit: Option<(Rate, &str)>,
    n: u64,
) -> anyhow::Result<f64> {
    let mut worker = stock_worker::start(options, admin, queue, queue, n, log, &[]).await?;
    let deadline = stock_worker::time_limit(n);
    let client_options = ClientOptions::default().publish_window(options.window as usize);
    let client = Client::connect_with(&options.amqp_url, client_options).await?;
    let start = Instant::now();
    let requests = (0..n).map(|_| {
        let request = Request::new(Noop {}).queue(queue);
        match limit {
            Some((rate, key)) => request.rate_limit(rate).rate_key(key),
            None => request,
        }
    });
    let sent = client.enqueue_many(requests).await;
    if let Some(Err(e)) = sent.into_iter().find(Result::is_err) {
        return Err(e.into());
    }
    let done = worker.reached(n, deadline).await?.saturating_duration_since(start);
    worker.stop().await?;
    client.close().await?;
    Ok(rate(n, done))
}
