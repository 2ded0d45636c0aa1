//! `--priorities`: what priority tiers cost. Each round sends the same N `demo.noop` jobs three
//! times, each time to a fresh queue and a fresh stock Lepus worker: plainly to the queue (a
//! worker without `priorities`); to the queue alone again, but through a worker with
//! `LEPUS_PRIORITIES=strict` (a consumer per tier, the other two idle: the worker's own cost);
//! and spread over the queue's three tiers, a third each, interleaved (`Request::priority`: the
//! broker's cost of three queues too). All are sent with `Client::enqueue_many`; the order
//! rotates between rounds.
//!
//! Each side is timed from just before the first publish to the worker's report of N acks. The
//! ratios are each tiered side's jobs/s over plain jobs/s.

use crate::admin::Admin;
use crate::figures::{rate, spread};
use crate::options::Options;
use crate::stock_worker;
use anyhow::Context;
use lepus::{Client, Priority, Request, WorkQueue};
use lepus_demo::jobs::Noop;
use std::path::Path;
use std::time::Instant;

/// One way of sending and consuming the same jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// To the queue; a worker without tiers.
    Plain,
    /// To the queue; a worker with tiers.
    Idle,
    /// Over the three tiers; a worker with tiers.
    Spread,
}

impl Side {
    const ALL: [Side; 3] = [Side::Plain, Side::Idle, Side::Spread];

    fn tag(self) -> &'static str {
        match self {
            Side::Plain => "plain",
            Side::Idle => "tiers-idle",
            Side::Spread => "spread",
        }
    }
}

/// Runs the rounds and prints each one's figures and the summary.
pub(crate) async fn run(options: &Options, admin: &Admin) -> anyhow::Result<()> {
    let n = options.jobs();
    let pid = std::process::id();
    let logs = std::env::temp_dir().join(format!("lepus-bench-{pid}"));
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    println!(
        "lepus-bench --priorities: {n} demo.noop jobs: to one queue (plain worker), to one queue (worker with tiers), \
         over its three tiers (worker with tiers, strict order); worker concurrency {}, {} rounds",
        options.concurrency, options.rounds
    );
    let (mut idle_ratios, mut spread_ratios) = (Vec::new(), Vec::new());
    for round in 1..=options.rounds {
        let mut order = Side::ALL;
        order.rotate_left(usize::try_from(round - 1).unwrap_or(0) % 3);
        let mut rates = [0.0; 3];
        for side in order {
            let tag = side.tag();
            let queue = format!("bench-{pid}-{round}-{tag}");
            let log = logs.join(format!("round-{round}-{tag}-worker.log"));
            let jobs_per_s = measure(options, admin, &queue, &log, side, n)
                .await
                .with_context(|| format!("round {round}, {tag}"))?;
            println!("  round {round}/{}: {tag:<10} {jobs_per_s:>8.0} jobs/s", options.rounds);
            rates[side as usize] = jobs_per_s;
        }
        let (idle, spread) = (rates[1] / rates[0], rates[2] / rates[0]);
        println!("  round {round}/{}: tiers-idle / plain = {idle:.2}, spread / plain = {spread:.2}", options.rounds);
        idle_ratios.push(idle);
        spread_ratios.push(spread);
    }
    for (what, ratios) in [("tiers-idle", &idle_ratios), ("spread", &spread_ratios)] {
        let (median, min, max) = spread(ratios);
        println!("{what} / plain jobs/s: median {median:.2} (min {min:.2}, max {max:.2}) over {} rounds", ratios.len());
    }
    drop(std::fs::remove_dir_all(&logs));
    Ok(())
}

/// One side of one round on fresh queues and a fresh worker; its jobs/s. The queues go afterwards.
async fn measure(options: &Options, admin: &Admin, queue: &str, log: &Path, side: Side, n: u64) -> anyhow::Result<f64> {
    let names: Vec<String> = if side == Side::Plain {
        vec![queue.to_owned()]
    } else {
        lepus::internal::topology::tier_queues(&WorkQueue::new(queue)?)?.iter().map(|q| q.name().to_owned()).collect()
    };
    for name in &names {
        admin.declare_work_queue(name).await?;
    }
    let measured = timed(options, admin, queue, &names, log, side, n).await;
    let mut doomed = names.clone();
    doomed.extend(names.iter().map(|name| lepus::internal::topology::dead_letter_queue(name)));
    admin.delete(&doomed).await;
    measured
}

async fn timed(
    options: &Options,
    admin: &Admin,
    queue: &str,
    names: &[String],
    log: &Path,
    side: Side,
    n: u64,
) -> anyhow::Result<f64> {
    let env: &[(&str, &str)] = if side == Side::Plain { &[] } else { &[("LEPUS_PRIORITIES", "strict")] };
    // The tiers are consumed in order, the low tier last.
    let last = names.last().map_or(queue, String::as_str);
    let mut worker = stock_worker::start(options, admin, queue, last, n, log, env).await?;
    let limit = stock_worker::time_limit(n);
    let client = Client::connect(&options.amqp_url).await?;
    let start = Instant::now();
    let requests = (0..n).map(|i| {
        let tier =
            if side == Side::Spread { Priority::ALL[usize::try_from(i % 3).unwrap_or(0)] } else { Priority::Normal };
        Request::new(Noop {}).queue(queue).priority(tier)
    });
    for sent in client.enqueue_many(requests).await {
        sent?;
    }
    let done = worker.reached(n, limit).await?.saturating_duration_since(start);
    client.close().await?;
    worker.stop().await?;
    Ok(rate(n, done))
}
