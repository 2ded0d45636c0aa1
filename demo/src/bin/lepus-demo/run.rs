//! The demo from start to end: connect, declare the queue, start the workers and the scheduler
//! replicas, send the jobs and a batch, let the schedulers run, count what they fired, then stop
//! everything, remove what the demo created and give the verdict. The stop and the clean-up run
//! however the middle ends: done, failed, or interrupted by Ctrl-C (or SIGTERM).

use crate::children::{Children, SCHEDULER, WORKER};
use crate::console::{errln, outln};
use crate::options::Options;
use crate::schedules::Schedules;
use crate::{cleanup, client_batch, connect, jobs};
use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use lepus::internal::topology::{BATCH_RECORDS_QUEUE, inspect_queue};
use lepus::{BatchId, Client, WorkQueue};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long the workers may take to start consuming, and the replicas to settle on a leader.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long the workers may take, once the schedulers have stopped, to run what was fired.
const SETTLE_WITHIN: Duration = Duration::from_secs(15);
/// How long a worker may run its jobs after SIGTERM, and how much longer the demo waits for it.
const GRACE_PERIOD: &str = "10s";
const WORKER_PATIENCE: Duration = Duration::from_secs(15);
/// A replica's connection heartbeat (a silent leader is replaced within about two), and how long
/// it may take to release the lead and exit after SIGTERM.
const HEARTBEAT: &str = "2s";
const SCHEDULER_PATIENCE: Duration = Duration::from_secs(10);

/// Runs the demo; exits 0 when every job got the expected result, every tick ran once, the
/// batches completed, and everything was stopped and cleaned up; 130 when interrupted.
pub(crate) async fn run(options: Options) -> ExitCode {
    let Some(client) = connect::client(&options.amqp_url).await else { return ExitCode::FAILURE };
    outln!("Connected to RabbitMQ at {}.", client.broker().url());
    let mut demo = match Demo::new(options, client).await {
        Ok(demo) => demo,
        Err(e) => {
            errln!("lepus-demo: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let steps = demo.steps().await;
    if let Err(e) = &steps
        && !demo.interrupted.is_cancelled()
    {
        errln!("lepus-demo: {e:#}");
    }
    let stops = demo.stop_and_clean_up().await;
    match steps {
        _ if demo.interrupted.is_cancelled() => {
            errln!("\nlepus-demo: interrupted; the workers and schedulers are stopped and the demo's queues removed.");
            return ExitCode::from(130);
        }
        Err(_) => errln!("\nlepus-demo: stopped early because of the error above."),
        Ok(wrong) if wrong.is_empty() && stops.is_empty() => {
            outln!(
                "\nEvery job got the expected result, every scheduled tick ran once, and the batches completed with one callback each."
            );
            return ExitCode::SUCCESS;
        }
        Ok(wrong) => errln!("\nlepus-demo: {}.", [wrong, stops].concat().join("; ")),
    }
    ExitCode::FAILURE
}

/// The demo's state: what the steps share, and what they leave for the stop and the clean-up.
#[derive(Debug)]
struct Demo {
    options: Options,
    client: Client,
    /// The work queue; its name, unique to the run, also names the scheduler group.
    queue: WorkQueue,
    schedules: Schedules,
    /// Cancelled by Ctrl-C or SIGTERM.
    interrupted: CancellationToken,
    /// Logs, the schedule file, and the records of `demo.record`.
    dir: PathBuf,
    workers: Children,
    schedulers: Children,
    /// When the replicas were started, and stopped.
    ran: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    schedulers_clean: bool,
    /// The replicas seen leading (by index).
    leaders: Vec<usize>,
    /// The client batch's id (chosen here, so that the clean-up knows it however the sending ends).
    client_batch: BatchId,
    /// Whether `lepus.batch.records` existed before the workers (which declare it) started.
    batch_records_existed: bool,
}

impl Demo {
    async fn new(options: Options, client: Client) -> anyhow::Result<Self> {
        let name = format!("lepus-demo-{}", std::process::id());
        let batch_records = inspect_queue(client.broker(), BATCH_RECORDS_QUEUE).await;
        Ok(Self {
            queue: WorkQueue::new(&name)?,
            schedules: Schedules::new(&name)?,
            interrupted: lepus::internal::cancelled_by(lepus_worker::shutdown_signal()),
            dir: std::env::temp_dir().join(&name),
            workers: Children::new(WORKER),
            schedulers: Children::new(SCHEDULER),
            ran: None,
            schedulers_clean: true,
            leaders: Vec::new(),
            client_batch: BatchId::from(format!("{name}.client")),
            batch_records_existed: batch_records.map_or(true, |queue| queue.is_some()),
            options,
            client,
        })
    }

    /// The steps; what did not end as expected (nothing if all did), or why the demo stopped early.
    async fn steps(&mut self) -> anyhow::Result<Vec<&'static str>> {
        self.client.declare_queue(&self.queue).await.context("cannot declare the demo queue")?;
        std::fs::create_dir_all(&self.dir).with_context(|| format!("cannot create {}", self.dir.display()))?;
        self.start_children().await?;
        let (client, queue, interrupted, dir) = (&self.client, self.queue.name(), &self.interrupted, &self.dir);
        let sent = jobs::run(client, queue, &self.options, &mut self.workers, interrupted).await;
        let jobs_correct =
            sent.with_context(|| format!("the jobs did not all come back (logs in {})", dir.display()))?;
        let batch = client_batch::run(client, queue, &self.client_batch, dir, self.options.timeout, interrupted).await;
        let batch_correct = batch.context("the client batch failed")?;
        self.let_schedulers_run().await?;
        if let Ok(Some(index)) = self.leader().await
            && !self.leaders.contains(&index)
        {
            self.leaders.push(index);
        }
        self.stop_schedulers().await;
        let Some((started, Some(stopped))) = self.ran else { bail!("the scheduler replicas did not run") };
        let (client, group) = (&self.client, self.queue.name());
        let fired =
            self.schedules.report(client, group, (started, stopped), &self.dir, SETTLE_WITHIN, &self.interrupted);
        let fired_correct = fired.await?;
        outln!("  leader          {}", self.roles("led", "stood by"));
        let checks = [
            (jobs_correct, "some jobs did not get the expected result"),
            (batch_correct, "the client batch did not complete with one callback"),
            (fired_correct, "a scheduled tick did not run exactly once"),
        ];
        Ok(checks.iter().filter(|(ok, _)| !ok).map(|(_, what)| *what).collect())
    }

    fn check_interrupted(&self) -> anyhow::Result<()> {
        if self.interrupted.is_cancelled() { bail!("interrupted") } else { Ok(()) }
    }

    /// Starts the workers and the scheduler replicas, and waits until every worker consumes the
    /// queue, and one replica leads while the others (still running) stand by.
    async fn start_children(&mut self) -> anyhow::Result<()> {
        let Options { workers, concurrency, schedulers, ref amqp_url, .. } = self.options;
        let (dir, queue) = (&self.dir, self.queue.name());
        let (concurrency, limit) = (concurrency.to_string(), self.queue.delivery_limit().to_string());
        let args = ["--queue", queue, "--concurrency", &concurrency, "--delivery-limit", &limit, "--grace-period"];
        let started = self.workers.start(workers, dir, amqp_url, &[&args[..], &[GRACE_PERIOD]].concat());
        let (count, logs) = (self.workers.len(), dir.display());
        let processes = if count == 1 { "process" } else { "processes" };
        outln!("Started {count} worker {processes} on queue {queue} ({concurrency} jobs at once each); logs in {logs}");
        started?;
        let path = self.schedules.write(dir)?.display().to_string();
        let args = ["run", "--schedules", &path, "--group", queue, "--heartbeat", HEARTBEAT];
        self.ran = Some((Utc::now(), None));
        let started = self.schedulers.start(schedulers, dir, amqp_url, &args);
        outln!("Started {} scheduler replicas of group {queue}.", self.schedulers.len());
        started?;
        let (waiting, mut consuming) = (Instant::now(), false);
        while !consuming || self.leaders.is_empty() {
            self.check_interrupted()?;
            if let Some(ended) = self.workers.ended().or_else(|| self.schedulers.ended()) {
                bail!(ended);
            }
            let ready_in = waiting.elapsed();
            if !consuming
                && inspect_queue(self.client.broker(), queue).await?.is_some_and(|q| q.consumers as usize >= count)
            {
                consuming = true;
                outln!("  {count} of {count} workers are consuming (ready in {:.2}s).", ready_in.as_secs_f64());
            }
            if self.leaders.is_empty()
                && let Some(leader) = self.leader().await?
            {
                self.leaders.push(leader);
                outln!("  {} (ready in {:.2}s).", self.roles("leads", "stands by"), ready_in.as_secs_f64());
            }
            if ready_in > READY_WITHIN {
                bail!(
                    "the workers or the scheduler replicas were not ready within {READY_WITHIN:?}; see the logs in {logs}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The replica that leads now, as the broker says.
    async fn leader(&self) -> lepus::Result<Option<usize>> {
        let leader = lepus_scheduler::leader(self.client.broker(), self.queue.name()).await?;
        Ok(leader.and_then(|leader| self.schedulers.index_of(&leader.node)))
    }

    /// Each replica, and whether it `led` (now or before another one took over) or `stood_by`.
    fn roles(&self, led: &str, stood_by: &str) -> String {
        let names = self.schedulers.names().into_iter().enumerate();
        let roles: Vec<String> = names
            .map(|(i, name)| format!("{name} {}", if self.leaders.contains(&i) { led } else { stood_by }))
            .collect();
        roles.join("; ")
    }

    /// Keeps the schedulers running until they have run `--schedule-seconds` in all.
    async fn let_schedulers_run(&self) -> anyhow::Result<()> {
        self.check_interrupted()?;
        let Some((started, _)) = self.ran else { return Ok(()) };
        let wanted = Duration::from_secs(u64::from(self.options.schedule_seconds));
        let left = wanted.saturating_sub((Utc::now() - started).to_std().unwrap_or_default());
        if !left.is_zero() {
            outln!();
            outln!("Letting the schedulers run {:.1}s more ({}s in all)…", left.as_secs_f64(), wanted.as_secs());
            tokio::select! {
                () = tokio::time::sleep(left) => {}
                () = self.interrupted.cancelled() => bail!("interrupted"),
            }
        }
        Ok(())
    }

    /// Stops the replicas, says how each ended and notes when.
    async fn stop_schedulers(&mut self) {
        self.schedulers_clean = self.schedulers.stop("scheduler replicas", SCHEDULER_PATIENCE).await;
        if let Some((_, stopped)) = &mut self.ran {
            *stopped = Some(Utc::now());
        }
    }

    /// Stops the replicas (unless stopped already) and the workers, and removes what the demo
    /// created on the broker; what went wrong.
    async fn stop_and_clean_up(&mut self) -> Vec<&'static str> {
        if self.ran.is_some_and(|(_, stopped)| stopped.is_none()) {
            self.stop_schedulers().await;
        }
        let workers_clean = self.workers.stop("workers", WORKER_PATIENCE).await;
        let cleaned = cleanup::remove(&self.client, &self.queue, &self.schedules, self.batch_records_existed).await;
        let checks = [
            (workers_clean, "some workers did not exit cleanly"),
            (self.schedulers_clean, "some scheduler replicas did not exit cleanly"),
            (cleaned, "the clean-up was incomplete"),
        ];
        checks.iter().filter(|(ok, _)| !ok).map(|(_, what)| *what).collect()
    }
}
