//! `--batches`: what batch tracking costs. Each round sends the same N `demo.noop` jobs twice, each
//! time to a fresh queue and a fresh stock Lepus worker (whose tracker is then the broker's active
//! one): once as plain enqueues, once as batches of `--batch-size` jobs, each batch with a
//! `demo.noop` callback; which goes first alternates between rounds.
//!
//! - plain: from just before the first publish to the worker's report of N acks;
//! - batched: from just before the first publish to the worker's report of N + N / size acks, the
//!   last of them a callback: every batch has completed, so the tracker kept up, not only the jobs.
//!
//! The ratio is batched jobs/s over plain jobs/s (the callbacks are not counted as jobs).

use crate::admin::Admin;
use crate::batch_producer::send_batches;
use crate::figures::{rate, spread};
use crate::lepus_producer::LepusProducer;
use crate::options::Options;
use crate::producer::Producer;
use crate::stock_worker;
use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

/// The two ways of sending the same jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sending {
    Plain,
    Batched,
}

impl Sending {
    fn tag(self) -> &'static str {
        match self {
            Sending::Plain => "plain",
            Sending::Batched => "batched",
        }
    }
}

/// Runs the rounds and prints each one's figures and the summary.
pub(crate) async fn run(options: &Options, admin: &Admin) -> anyhow::Result<()> {
    let size = u64::from(options.batch_size);
    let n = options.jobs().div_ceil(size) * size;
    let pid = std::process::id();
    let logs = std::env::temp_dir().join(format!("lepus-bench-{pid}"));
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    println!(
        "lepus-bench --batches: {n} demo.noop jobs, plain and as {} batches of {size} (each with a callback), \
         worker concurrency {}, window {} jobs, {} rounds",
        n / size,
        options.concurrency,
        options.window,
        options.rounds
    );
    let mut ratios = Vec::new();
    for round in 1..=options.rounds {
        let order =
            if round % 2 == 1 { [Sending::Plain, Sending::Batched] } else { [Sending::Batched, Sending::Plain] };
        let mut plain = 0.0;
        let mut batched = 0.0;
        for sending in order {
            let queue = format!("bench-{pid}-{round}-{}", sending.tag());
            let log = logs.join(format!("round-{round}-{}-worker.log", sending.tag()));
            let jobs_per_s = measure(options, admin, &queue, &log, sending, n)
                .await
                .with_context(|| format!("round {round}, {}", sending.tag()))?;
            println!("  round {round}/{}: {:<7} {jobs_per_s:>8.0} jobs/s", options.rounds, sending.tag());
            match sending {
                Sending::Plain => plain = jobs_per_s,
                Sending::Batched => batched = jobs_per_s,
            }
        }
        let ratio = batched / plain;
        println!("  round {round}/{}: batched / plain = {ratio:.2}", options.rounds);
        ratios.push(ratio);
    }
    let (median, min, max) = spread(&ratios);
    println!("batched / plain jobs/s: median {median:.2} (min {min:.2}, max {max:.2}) over {} rounds", ratios.len());
    drop(std::fs::remove_dir_all(&logs));
    Ok(())
}

/// One side of one round on a fresh queue and worker; its jobs/s. The queues go afterwards.
async fn measure(
    options: &Options,
    admin: &Admin,
    queue: &str,
    log: &Path,
    sending: Sending,
    n: u64,
) -> anyhow::Result<f64> {
    admin.declare_work_queue(queue).await?;
    let measured = timed(options, admin, queue, log, sending, n).await;
    admin.delete(&[queue.to_owned(), lepus::internal::topology::dead_letter_queue(queue)]).await;
    measured
}

async fn timed(
    options: &Options,
    admin: &Admin,
    queue: &str,
    log: &Path,
    sending: Sending,
    n: u64,
) -> anyhow::Result<f64> {
    let callbacks = match sending {
        Sending::Plain => 0,
        Sending::Batched => n / u64::from(options.batch_size),
    };
    let mut worker = stock_worker::start(options, admin, queue, queue, n + callbacks, log, &[]).await?;
    let limit = stock_worker::time_limit(n);
    let window = options.window as usize;
    let start = Instant::now();
    let sent = match sending {
        Sending::Plain => {
            let producer = LepusProducer::connect(&options.amqp_url, queue, window).await?;
            let sent = producer.send(n, &Arc::new(AtomicU64::new(0))).await;
            producer.close().await?;
            sent
        }
        Sending::Batched => send_batches(&options.amqp_url, queue, n, options.batch_size, window).await,
    };
    sent?;
    let done = worker.reached(n + callbacks, limit).await?.saturating_duration_since(start);
    worker.stop().await?;
    Ok(rate(n, done))
}
