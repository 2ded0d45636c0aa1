//! The demo from start to end: connect, declare the queue, start the workers, send the jobs while
//! showing progress, report, then stop the workers and remove what the demo created. The clean-up
//! runs however the middle ends: done, failed, or interrupted by Ctrl-C (or SIGTERM).

use crate::console::{errln, outln};
use crate::jobs::Sender;
use crate::options::Options;
use crate::progress::{Progress, REDRAW_EVERY};
use crate::summary::{Report, mix_of};
use crate::tally::SharedTally;
use crate::workers::{WorkerSettings, Workers};
use crate::{connect, plan, queues};
use anyhow::anyhow;
use lepus::Client;
use lepus::topology::{DEFAULT_DELIVERY_LIMIT, WorkQueue};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long the workers may take to start consuming.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// How the part between start-up and clean-up ended.
#[derive(Debug)]
enum Outcome {
    /// Every job got an answer (or gave up waiting); `correct` if each was the expected one.
    Finished { correct: bool },
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// Something kept the demo from running its jobs; already reported by [`give_up`].
    Failed,
}

/// Reports on standard error, at once, what kept the demo from running its jobs.
fn give_up(error: &anyhow::Error) -> Outcome {
    errln!("lepus-demo: {error:#}");
    Outcome::Failed
}

/// Runs the demo; exits 0 when every job got the expected result and everything was cleaned up.
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
    let queue = match WorkQueue::new(queues::demo_queue_name()) {
        Ok(queue) => queue.with_delivery_limit(DEFAULT_DELIVERY_LIMIT),
        Err(e) => return finish(give_up(&e.into()), true, true),
    };
    if let Err(e) = client.declare_queue(&queue).await {
        let closed = close_client(&client).await;
        return finish(give_up(&anyhow!(e).context("cannot declare the demo queue")), true, closed);
    }
    let demo = Demo { options: &options, client: &client, queue: &queue, interrupted: &interrupted };
    let (outcome, workers_clean) = match Workers::new(queue.name()) {
        Ok(mut workers) => {
            let outcome = demo.with_workers(&mut workers).await;
            (outcome, stop_workers(workers).await)
        }
        Err(e) => (give_up(&e), true),
    };
    let cleaned = close_client(&client).await & delete_queues(&client, &queue).await;
    finish(outcome, workers_clean, cleaned)
}

/// What the steps between start-up and clean-up share.
#[derive(Debug)]
struct Demo<'a> {
    options: &'a Options,
    client: &'a Client,
    queue: &'a WorkQueue,
    interrupted: &'a CancellationToken,
}

impl Demo<'_> {
    async fn with_workers(&self, workers: &mut Workers) -> Outcome {
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
            workers.log_dir().display()
        );
        if let Err(e) = started {
            return give_up(&e);
        }
        match self.wait_until_consumed(workers).await {
            Some(outcome) => outcome,
            None => self.send_jobs(workers).await,
        }
    }

    /// Waits until every worker consumes the queue; `Some` if the demo cannot go on.
    async fn wait_until_consumed(&self, workers: &mut Workers) -> Option<Outcome> {
        let started = Instant::now();
        let wanted = u32::try_from(workers.count()).unwrap_or(u32::MAX);
        loop {
            if self.interrupted.is_cancelled() {
                return Some(Outcome::Interrupted);
            }
            if let Some(ended) = workers.ended() {
                return Some(give_up(&anyhow!("{ended}")));
            }
            match queues::consumers(self.client.broker(), self.queue.name()).await {
                Ok(consumers) if consumers >= wanted => break,
                Ok(_) if started.elapsed() > READY_WITHIN => {
                    let logs = workers.log_dir().display();
                    return Some(give_up(&anyhow!(
                        "the workers did not start consuming within {READY_WITHIN:?}; see their logs in {logs}"
                    )));
                }
                Ok(_) => {}
                Err(e) => return Some(give_up(&e)),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ready_in = started.elapsed().as_secs_f64();
        outln!("{wanted} of {wanted} workers are consuming (ready in {ready_in:.2}s).");
        None
    }

    /// Sends the jobs, shows progress until the last result is in, and prints the report.
    async fn send_jobs(&self, workers: &mut Workers) -> Outcome {
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
            let logs = workers.log_dir().display();
            return give_up(&anyhow!("every worker process has ended; see their logs in {logs}"));
        }
        if self.interrupted.is_cancelled() {
            return Outcome::Interrupted;
        }
        let per_worker = workers.jobs_per_worker(&tally.by_worker);
        Report { mix: &mix, tally: &tally, elapsed, per_worker: &per_worker }.print();
        Outcome::Finished { correct: tally.all_correct(total) }
    }
}

/// Stops the workers and says how each ended; `true` if all exited cleanly.
async fn stop_workers(workers: Workers) -> bool {
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

/// Closes the client, which deletes its reply queue; `true` if that worked.
async fn close_client(client: &Client) -> bool {
    match client.close().await {
        Ok(()) => true,
        Err(e) => {
            errln!("lepus-demo: cannot close the client and delete its reply queue: {e}");
            false
        }
    }
}

/// Deletes the demo queue and its dead-letter queue; `true` if that worked.
async fn delete_queues(client: &Client, queue: &WorkQueue) -> bool {
    match queues::delete(client.broker(), queue).await {
        Ok(left) => {
            outln!(
                "Closed the client (its reply queue is deleted) and deleted queues {} and {}.",
                queue.name(),
                queue.dead_letter_queue()
            );
            if left.queued > 0 || left.dead_lettered > 0 {
                outln!("  ({} messages were still queued, {} dead-lettered.)", left.queued, left.dead_lettered);
            }
            true
        }
        Err(e) => {
            errln!("lepus-demo: {e:#}; delete it with `rabbitmqctl delete_queue {}`", queue.name());
            false
        }
    }
}

/// Prints the verdict and picks the exit code.
fn finish(outcome: Outcome, workers_clean: bool, cleaned: bool) -> ExitCode {
    match outcome {
        Outcome::Finished { correct: true } if workers_clean && cleaned => {
            outln!("\nEvery job got the expected result.");
            ExitCode::SUCCESS
        }
        Outcome::Finished { correct } => {
            let mut problems = Vec::new();
            if !correct {
                problems.push("some jobs did not get the expected result");
            }
            if !workers_clean {
                problems.push("some workers did not exit cleanly");
            }
            if !cleaned {
                problems.push("the clean-up was incomplete");
            }
            errln!("\nlepus-demo: {}.", problems.join("; "));
            ExitCode::FAILURE
        }
        Outcome::Interrupted => {
            errln!("\nlepus-demo: interrupted; the workers are stopped and the demo's queues removed.");
            ExitCode::from(130)
        }
        Outcome::Failed => {
            errln!("\nlepus-demo: stopped early because of the error above.");
            ExitCode::FAILURE
        }
    }
}
