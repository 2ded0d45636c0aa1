//! One side of one round: a fresh work queue, the side's worker process, then the phases timed by
//! the same code for both sides, and the worker's memory. The queues go afterwards.
//!
//! 1. (a) N jobs with no result: from just before the first publish to the arrival of the
//!    worker's report that it has acked N deliveries.
//! 2. Untimed warm-up calls (they also create the Lepus client's reply queue).
//! 3. (b) N jobs with results: from just before the first publish to the N-th result received.
//! 4. (c) calls one at a time, each timed from publish to result.
//!
//! The broker is left idle for a second before (a), after (a) and before (c).

use crate::admin::Admin;
use crate::figures::{Figures, percentile_ms, rate};
use crate::lepus_producer::LepusProducer;
use crate::monitor::Monitor;
use crate::options::Options;
use crate::producer::{Producer, RESULT_TIMEOUT};
use crate::progress::Progress;
use crate::raw_producer::RawProducer;
use crate::role::{Contender, Feature, Side, WorkerSpec};
use crate::worker_process::WorkerProcess;
use anyhow::Context;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a worker may take to attach its consumer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a started worker idles before its memory at rest is read, and how long the broker is
/// left idle between phases, so that one phase's aftermath (queue logs written out, message
/// store compaction) does not land in the next one's timings.
const SETTLE: Duration = Duration::from_secs(1);

const MIB: f64 = 1024.0;

/// Where one contender of one round runs.
#[derive(Debug)]
pub(crate) struct Run<'a> {
    pub(crate) contender: Contender,
    /// Shown in progress lines, e.g. `round 2/3, Lepus`.
    pub(crate) label: String,
    pub(crate) queue: String,
    pub(crate) options: &'a Options,
    pub(crate) admin: &'a Admin,
    pub(crate) log: &'a Path,
}

impl Run<'_> {
    /// Measures this side, then deletes its queues whatever happened.
    pub(crate) async fn measure(&self) -> anyhow::Result<Figures> {
        self.admin.declare_work_queue(&self.queue).await?;
        let measured = self.with_worker().await;
        let mut queues = vec![self.queue.clone(), lepus::internal::topology::dead_letter_queue(&self.queue)];
        if self.contender.side == Side::Raw {
            queues.push(self.reply_queue());
        }
        self.admin.delete(&queues).await;
        measured
    }

    fn reply_queue(&self) -> String {
        format!("{}.reply", self.queue)
    }

    async fn with_worker(&self) -> anyhow::Result<Figures> {
        let options = self.options;
        let metrics_addr = (self.contender.feature == Some(Feature::Metrics)).then(free_address).transpose()?;
        let events = self.contender.feature == Some(Feature::Events);
        let monitor = if events { Some(Monitor::start(&options.amqp_url).await?) } else { None };
        let spec = WorkerSpec {
            side: self.contender.side,
            amqp_url: options.amqp_url.clone(),
            queue: self.queue.clone(),
            concurrency: options.concurrency,
            targets: vec![options.jobs()],
            celery_wire: options.raw_headers,
            metrics_addr: metrics_addr.clone(),
            events,
            service: None,
        };
        let mut worker = WorkerProcess::start(&spec, self.log)?;
        self.admin.await_consumer(&self.queue, &mut worker, READY_TIMEOUT).await?;
        tokio::time::sleep(SETTLE).await;
        let at_rest = worker.memory()?;
        let cpu_before = worker.cpu_seconds()?;
        let window = options.window as usize;
        let timed = match self.contender.side {
            Side::Raw => {
                let producer = RawProducer::connect(
                    &options.amqp_url,
                    &self.queue,
                    &self.reply_queue(),
                    window,
                    options.raw_headers,
                )
                .await
                .context("the raw producer cannot connect")?;
                let timed = self.phases(&producer, &mut worker).await;
                let closed = producer.close().await;
                timed.and_then(|timed| closed.map(|()| timed))
            }
            Side::Lepus => {
                let producer = LepusProducer::connect(&options.amqp_url, &self.queue, window)
                    .await
                    .context("the Lepus client cannot connect")?;
                let timed = self.phases(&producer, &mut worker).await;
                let closed = producer.close().await;
                timed.and_then(|timed| closed.map(|()| timed))
            }
        }?;
        let cpu = worker.cpu_seconds()? - cpu_before;
        let after = worker.memory()?;
        let ran = u64::from(options.warmup) + u64::from(options.calls) + 2 * options.jobs();
        if let Some(address) = metrics_addr {
            check_metrics(&address, ran)?;
        }
        if let Some(monitor) = monitor {
            let seen = monitor.stop().await;
            println!("  the monitor saw {seen} events ({:.1} a job)", seen as f64 / ran as f64);
        }
        worker.stop().await?;
        Ok(Figures {
            cpu_us_per_job: cpu * 1e6 / ran as f64,
            rest_mib: at_rest.resident_kib as f64 / MIB,
            peak_mib: after.peak_kib as f64 / MIB,
            ..timed
        })
    }

    /// Runs the phases; the CPU and memory figures are left at zero.
    async fn phases(&self, producer: &impl Producer, worker: &mut WorkerProcess) -> anyhow::Result<Figures> {
        let options = self.options;
        let n = options.jobs();
        let limit = throughput_timeout(n);

        let sent = counter();
        let counters = vec![("confirmed", Arc::clone(&sent)), ("acked", worker.settled())];
        let progress = Progress::start(format!("{} (a) {n} jobs", self.label), n, counters);
        let start = Instant::now();
        within(limit, "phase (a)", producer.send(n, &sent)).await?;
        let confirmed = start.elapsed();
        let acked = worker.reached(n, limit).await?.saturating_duration_since(start);
        let jobs_per_s = rate(n, acked);
        progress.finish(&format!(
            "{jobs_per_s:.0} jobs/s (all confirmed after {:.2} s, all acked after {:.2} s)",
            confirmed.as_secs_f64(),
            acked.as_secs_f64()
        ));

        tokio::time::sleep(SETTLE).await;
        let calls = counter();
        let progress = Progress::start(
            format!("{} warm-up {} calls", self.label, options.warmup),
            options.warmup.into(),
            vec![("done", Arc::clone(&calls))],
        );
        for _ in 0..options.warmup {
            within(RESULT_TIMEOUT, "a warm-up call", producer.call()).await?;
            calls.fetch_add(1, Ordering::Relaxed);
        }
        progress.finish("done");

        let (sent, received) = (counter(), counter());
        let counters = vec![("confirmed", Arc::clone(&sent)), ("results", Arc::clone(&received))];
        let progress = Progress::start(format!("{} (b) {n} jobs with results", self.label), n, counters);
        let start = Instant::now();
        let last = within(limit, "phase (b)", producer.send_for_results(n, &sent, &received)).await?;
        let results_per_s = rate(n, last.saturating_duration_since(start));
        progress.finish(&format!("{results_per_s:.0} jobs/s"));

        tokio::time::sleep(SETTLE).await;
        let calls = counter();
        let total = options.calls;
        let progress = Progress::start(
            format!("{} (c) {total} calls", self.label),
            total.into(),
            vec![("done", Arc::clone(&calls))],
        );
        let mut round_trips = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let start = Instant::now();
            within(RESULT_TIMEOUT, "a call", producer.call()).await?;
            round_trips.push(start.elapsed());
            calls.fetch_add(1, Ordering::Relaxed);
        }
        round_trips.sort_unstable();
        let (call_p50_ms, call_p99_ms) = (percentile_ms(&round_trips, 50.0), percentile_ms(&round_trips, 99.0));
        progress.finish(&format!("p50 {call_p50_ms:.2} ms, p99 {call_p99_ms:.2} ms"));

        Ok(Figures {
            jobs_per_s,
            results_per_s,
            call_p50_ms,
            call_p99_ms,
            cpu_us_per_job: 0.0,
            rest_mib: 0.0,
            peak_mib: 0.0,
        })
    }
}

/// Checks that the worker's `/metrics` counted `ran` succeeded jobs: metrics were on and live.
fn check_metrics(address: &str, ran: u64) -> anyhow::Result<()> {
    let page = ureq::get(&format!("http://{address}/metrics"))
        .call()
        .and_then(|mut response| response.body_mut().read_to_string())
        .with_context(|| format!("cannot read the worker's metrics at {address}"))?;
    let counted: f64 = page
        .lines()
        .filter(|line| line.starts_with("lepus_jobs_total{") && line.contains("outcome=\"succeeded\""))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    anyhow::ensure!(counted as u64 == ran, "the worker's metrics count {counted} succeeded jobs, not {ran}");
    Ok(())
}

/// A loopback address with a port that was free a moment ago.
fn free_address() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("no free port")?;
    Ok(listener.local_addr().context("no free port")?.to_string())
}

fn counter() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(0))
}

/// A generous bound on a throughput phase: a minute plus 10 ms a job.
fn throughput_timeout(jobs: u64) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(10).saturating_mul(u32::try_from(jobs).unwrap_or(u32::MAX))
}

async fn within<T>(limit: Duration, what: &str, work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(limit, work).await.with_context(|| format!("{what} took longer than {limit:?}"))?
}
