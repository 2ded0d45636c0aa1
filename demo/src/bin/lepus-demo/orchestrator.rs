//! The demo from start to end: connect, declare the queue, start the workers and the scheduler
//! replicas, send the jobs and a batch while showing progress, let the schedulers run, count what
//! they fired, report, then stop everything and remove what the demo created. The clean-up runs
//! however the middle ends: done, failed, or interrupted by Ctrl-C (or SIGTERM).

use crate::cleanup::Leftovers;
use crate::client_batch::{self, ClientBatch};
use crate::console::outln;
use crate::firings::{Lookup, Window};
use crate::jobs::Sender;
use crate::options::Options;
use crate::progress::{Progress, REDRAW_EVERY};
use crate::schedule_file::{DemoSchedules, FANOUT_ITEMS};
use crate::schedule_report::ScheduleReport;
use crate::schedulers::{SchedulerSettings, Schedulers};
use crate::summary::{Report, mix_of};
use crate::tally::SharedTally;
use crate::verdict::{Outcome, Stops, finish, give_up};
use crate::workers::{WorkerSettings, Workers};
use crate::{connect, plan, queues};
use anyhow::{Context as _, anyhow};
use chrono::{DateTime, Utc};
use lepus::Client;
use lepus::internal::topology::BATCH_RECORDS_QUEUE;
use lepus::{DEFAULT_DELIVERY_LIMIT, WorkQueue};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long the workers may take to start consuming, and the replicas to lead or stand by.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// How long the workers may take, once the schedulers have stopped, to run what was fired.
const SETTLE_WITHIN: Duration = Duration::from_secs(15);

/// Runs the demo; exits 0 when every job got the expected result, every tick ran once, the
/// batches completed, and everything was cleaned up.
pub(crate) async fn run(options: Options) -> ExitCode {
    let Some(client) = connect::client(&options.amqp_url).await else { return ExitCode::FAILURE };
    let interrupted = CancellationToken::new();
    tokio::spawn({
        let interrupted = interrupted.clone();
        async move {
            lepus_worker::shutdown_signal().await;
            interrupted.cancel();
        }
    });
    outln!("Connected to RabbitMQ at {}.", client.broker().url());
    let nothing_to_stop = Stops { workers_clean: true, schedulers_clean: true, cleaned: true };
    let queue = match WorkQueue::new(queues::demo_queue_name()) {
        Ok(queue) => queue.with_delivery_limit(DEFAULT_DELIVERY_LIMIT),
        Err(e) => return finish(give_up(&e.into()), nothing_to_stop),
    };
    // Workers declare the batch records queue; the clean-up removes it only if this run made it.
    let batch_records_existed = queues::exists(client.broker(), BATCH_RECORDS_QUEUE).await.unwrap_or(true);
    let dir = std::env::temp_dir().join(queue.name());
    let mut demo = Demo {
        options: &options,
        client: &client,
        queue: &queue,
        group: queue.name().to_owned(),
        interrupted: &interrupted,
        dir,
        schedules: None,
        schedulers_started: None,
        schedulers_stopped: None,
        schedulers_clean: true,
        client_batch: None,
    };
    let mut workers = Workers::new(&demo.dir);
    let mut schedulers = Schedulers::new(&demo.dir);
    let outcome = demo.steps(&mut workers, &mut schedulers).await;
    if !schedulers.is_stopped() {
        demo.stop_schedulers(&mut schedulers).await;
    }
    let workers_clean = stop_workers(&mut workers).await;
    let leftovers = Leftovers {
        client: &client,
        queue: &queue,
        schedules: demo.schedules.as_ref().map(|s| (demo.group.as_str(), s)),
        window: demo.window(),
        client_batch: demo.client_batch.as_ref().map(|b| &b.id),
        batch_records_existed,
    };
    let cleaned = leftovers.remove().await;
    finish(outcome, Stops { workers_clean, schedulers_clean: demo.schedulers_clean, cleaned })
}

/// What the steps between start-up and clean-up share, and what they leave for the clean-up.
#[derive(Debug)]
struct Demo<'a> {
    options: &'a Options,
    client: &'a Client,
    queue: &'a WorkQueue,
    /// The scheduler group of this run's replicas: the queue's name, unique to the run.
    group: String,
    interrupted: &'a CancellationToken,
    /// Logs, the schedule file, and the records of `demo.record`.
    dir: PathBuf,
    schedules: Option<DemoSchedules>,
    /// When the schedulers were started and stopped.
    schedulers_started: Option<DateTime<Utc>>,
    schedulers_stopped: Option<DateTime<Utc>>,
    schedulers_clean: bool,
    client_batch: Option<ClientBatch>,
}

impl Demo<'_> {
    /// When the schedulers ran (until now if they still run): every tick they can have fired.
    fn window(&self) -> Option<Window> {
        let started = self.schedulers_started?;
        Some(Window::new(started, self.schedulers_stopped.unwrap_or_else(Utc::now)))
    }

    async fn steps(&mut self, workers: &mut Workers, schedulers: &mut Schedulers) -> Outcome {
        match self.try_steps(workers, schedulers).await {
            Ok(outcome) | Err(outcome) => outcome,
        }
    }

    /// The steps; `Err` when one of them ends the demo early.
    async fn try_steps(&mut self, workers: &mut Workers, schedulers: &mut Schedulers) -> Result<Outcome, Outcome> {
        self.client
            .declare_queue(self.queue)
            .await
            .map_err(|e| give_up(&anyhow!(e).context("cannot declare the demo queue")))?;
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create the demo's directory {}", self.dir.display()))
            .map_err(|e| give_up(&e))?;
        self.start_workers(workers).await?;
        self.start_schedulers(schedulers).await?;
        let jobs_correct = self.send_jobs(workers).await?;
        let batch = client_batch::run(self.client, self.queue.name(), self.options.timeout, self.interrupted)
            .await
            .map_err(|e| give_up(&e.context("the client batch failed")))?;
        self.client_batch = batch;
        self.check_interrupted()?;
        self.let_schedulers_run().await?;
        self.stop_schedulers(schedulers).await;
        let mut wrong = self.report_firings(schedulers).await?;
        if !jobs_correct {
            wrong.insert(0, "some jobs did not get the expected result");
        }
        Ok(Outcome::Finished { wrong })
    }

    fn check_interrupted(&self) -> Result<(), Outcome> {
        if self.interrupted.is_cancelled() { Err(Outcome::Interrupted) } else { Ok(()) }
    }

    async fn start_workers(&self, workers: &mut Workers) -> Result<(), Outcome> {
        let Options { workers: count, concurrency, .. } = *self.options;
        let settings = WorkerSettings {
            amqp_url: self.options.amqp_url.clone(),
            queue: self.queue.name().to_owned(),
            concurrency,
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
        };
        let started = workers.start(count, &settings);
        let started_count = workers.count();
        let processes = if started_count == 1 { "process" } else { "processes" };
        outln!(
            "Started {started_count} worker {processes} on queue {} ({concurrency} jobs at once each); their logs are in {}",
            self.queue.name(),
            self.dir.display()
        );
        started.map_err(|e| give_up(&e))?;
        self.wait_until_consumed(workers).await
    }

    /// Waits until every worker consumes the queue.
    async fn wait_until_consumed(&self, workers: &mut Workers) -> Result<(), Outcome> {
        let started = Instant::now();
        let wanted = u32::try_from(workers.count()).unwrap_or(u32::MAX);
        loop {
            self.check_interrupted()?;
            if let Some(ended) = workers.ended() {
                return Err(give_up(&anyhow!("{ended}")));
            }
            match queues::consumers(self.client.broker(), self.queue.name()).await {
                Ok(consumers) if consumers >= wanted => break,
                Ok(_) if started.elapsed() > READY_WITHIN => {
                    let logs = self.dir.display();
                    return Err(give_up(&anyhow!(
                        "the workers did not start consuming within {READY_WITHIN:?}; see their logs in {logs}"
                    )));
                }
                Ok(_) => {}
                Err(e) => return Err(give_up(&e)),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ready_in = started.elapsed().as_secs_f64();
        outln!("{wanted} of {wanted} workers are consuming (ready in {ready_in:.2}s).");
        Ok(())
    }

    /// Writes the schedule file, starts the replicas and waits until one leads and the others
    /// stand by.
    async fn start_schedulers(&mut self, schedulers: &mut Schedulers) -> Result<(), Outcome> {
        let schedules = DemoSchedules::write(&self.dir, self.queue.name()).map_err(|e| give_up(&e))?;
        let settings = SchedulerSettings {
            amqp_url: self.options.amqp_url.clone(),
            schedules: schedules.path.clone(),
            group: self.group.clone(),
        };
        let (pulse, fanout) = (&schedules.pulse, &schedules.fanout);
        outln!(
            "Schedules in {}: {} ({:?}, one demo.record job) and {} ({:?}, a batch of {FANOUT_ITEMS} demo.add with a demo.record callback).",
            schedules.path.display(),
            pulse.name(),
            pulse.cron(),
            fanout.name(),
            fanout.cron()
        );
        self.schedules = Some(schedules);
        self.schedulers_started = Some(Utc::now());
        let started = schedulers.start(self.options.schedulers, &settings);
        outln!("Started {} scheduler replicas of group {}.", schedulers.count(), self.group);
        started.map_err(|e| give_up(&e))?;
        let waiting = Instant::now();
        loop {
            self.check_interrupted()?;
            if let Some(ended) = schedulers.ended() {
                return Err(give_up(&anyhow!("{ended}")));
            }
            let replicas = schedulers.replicas();
            let leaders = replicas.iter().filter(|r| r.led).count();
            if leaders == 1 && replicas.iter().all(|r| r.led || r.stood_by) {
                let roles: Vec<String> = replicas
                    .iter()
                    .map(|r| format!("{} {}", r.label, if r.led { "leads" } else { "stands by" }))
                    .collect();
                outln!("  {} (ready in {:.2}s).", roles.join("; "), waiting.elapsed().as_secs_f64());
                return Ok(());
            }
            if waiting.elapsed() > READY_WITHIN {
                let logs = self.dir.display();
                return Err(give_up(&anyhow!(
                    "the scheduler replicas did not settle on one leader within {READY_WITHIN:?}; see their logs in {logs}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends the jobs, shows progress until the last result is in, and prints the report;
    /// `Ok(true)` if every job got the expected result.
    async fn send_jobs(&self, workers: &mut Workers) -> Result<bool, Outcome> {
        let jobs = plan::mix(self.options.jobs);
        let mix = mix_of(&jobs);
        let total = u64::from(self.options.jobs);
        let in_flight = usize::try_from(self.options.in_flight).unwrap_or(usize::MAX);
        outln!("Sending {total} jobs, at most {in_flight} in flight…");
        let sender = Sender {
            client: self.client.clone(),
            queue: self.queue.name().to_owned(),
            in_flight,
            timeout: self.options.timeout,
        };
        let tally = SharedTally::default();
        let started = Instant::now();
        let mut progress = Progress::new(total, started);
        let sending = sender.run_all(jobs, tally.clone());
        tokio::pin!(sending);
        let workers_ended = loop {
            tokio::select! {
                () = &mut sending => break false,
                () = self.interrupted.cancelled() => break false,
                () = tokio::time::sleep(REDRAW_EVERY) => {
                    let (done, failed) = tally.progress();
                    progress.show(done, failed);
                    if workers.all_ended() {
                        break true;
                    }
                }
            }
        };
        let elapsed = started.elapsed();
        let tally = tally.snapshot();
        progress.finish(tally.done, tally.failed + tally.lost);
        if workers_ended {
            let logs = self.dir.display();
            return Err(give_up(&anyhow!("every worker process has ended; see their logs in {logs}")));
        }
        self.check_interrupted()?;
        let per_worker = workers.jobs_per_worker(&tally.by_worker);
        Report { mix: &mix, tally: &tally, elapsed, per_worker: &per_worker }.print();
        Ok(tally.all_correct(total))
    }

    /// Keeps the schedulers running until they have run `--schedule-seconds` in all.
    async fn let_schedulers_run(&self) -> Result<(), Outcome> {
        let Some(started) = self.schedulers_started else { return Ok(()) };
        let wanted = Duration::from_secs(u64::from(self.options.schedule_seconds));
        let ran = (Utc::now() - started).to_std().unwrap_or_default();
        if let Some(left) = wanted.checked_sub(ran).filter(|left| !left.is_zero()) {
            outln!();
            outln!("Letting the schedulers run {:.1}s more ({}s in all)…", left.as_secs_f64(), wanted.as_secs());
            tokio::select! {
                () = tokio::time::sleep(left) => {}
                () = self.interrupted.cancelled() => return Err(Outcome::Interrupted),
            }
        }
        Ok(())
    }

    /// Stops the replicas, says how each ended and closes the window of their firings.
    async fn stop_schedulers(&mut self, schedulers: &mut Schedulers) {
        if schedulers.count() == 0 {
            return;
        }
        outln!();
        outln!("Stopping the scheduler replicas (SIGTERM)…");
        let stopped = schedulers.stop().await;
        for replica in &stopped {
            outln!("  {} {}", replica.label, replica.how);
        }
        self.schedulers_clean = stopped.iter().all(|r| r.clean);
        self.schedulers_stopped = Some(Utc::now());
    }

    /// Waits for the workers to run what the schedulers fired, counts it and prints the report;
    /// returns what did not end as expected.
    async fn report_firings(&self, schedulers: &Schedulers) -> Result<Vec<&'static str>, Outcome> {
        let (Some(schedules), Some(window)) = (&self.schedules, self.window()) else { return Ok(Vec::new()) };
        outln!("Waiting for the workers to run the last firings…");
        let lookup = Lookup {
            client: self.client,
            dir: &self.dir,
            schedules,
            group: &self.group,
            window,
            client_batch: self.client_batch.as_ref().map(|b| &b.id),
        };
        let firings = lookup.count(SETTLE_WITHIN, self.interrupted).await.map_err(|e| give_up(&e))?;
        self.check_interrupted()?;
        let replicas = schedulers.replicas();
        let report = ScheduleReport {
            group: &self.group,
            schedules,
            firings: &firings,
            replicas: &replicas,
            client_batch: self.client_batch.as_ref(),
        };
        Ok(report.print())
    }
}

/// Stops the workers and says how each ended; `true` if all exited cleanly.
async fn stop_workers(workers: &mut Workers) -> bool {
    if workers.count() == 0 {
        return true;
    }
    outln!();
    outln!("Stopping the workers (SIGTERM)…");
    let stopped = workers.stop().await;
    for worker in &stopped {
        outln!("  {} {}", worker.label, worker.how);
    }
    stopped.iter().all(|w| w.clean)
}
