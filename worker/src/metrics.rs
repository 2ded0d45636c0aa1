//! The worker's metrics. Their names and labels are an operator contract (the README lists them):
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `lepus_jobs_total` | `queue`, `job`, `outcome` | settled deliveries: `succeeded`, `failed` (for good), `retried`, `dead_lettered`, `expired`, `deferred`, `revoked` |
//! | `lepus_job_duration_seconds` | `queue`, `job` | histogram of handler run time |
//! | `lepus_jobs_in_flight` | `queue` | deliveries being run or settled |
//! | `lepus_worker_concurrency` | | the configured concurrency |
//! | `lepus_broker_connected` | | 1 while the worker consumes, else 0 |
//! | `lepus_broker_reconnects_total` | | times the worker consumed again after a loss |
//! | `lepus_batches_completed_total` | | batches this worker's tracker completed |
//!
//! Every series exists from the start, at 0, for every queue and registered job (a queue added
//! by remote control, from then on): the handles are made once per queue. A message whose job is not registered here (or that names
//! none) counts under `job="(unknown)"`, so hostile names cannot make new series.

use crate::outcome::Ended;
use lepus::internal::endpoint::MetricsRegistry;
use metrics::{Counter, Gauge, Histogram};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// The `job` label of messages whose job this worker does not run.
pub(crate) const UNKNOWN_JOB: &str = "(unknown)";

const OUTCOMES: [(Ended, &str); 7] = [
    (Ended::Succeeded, "succeeded"),
    (Ended::Failed, "failed"),
    (Ended::Retried, "retried"),
    (Ended::DeadLettered, "dead_lettered"),
    (Ended::Expired, "expired"),
    (Ended::Deferred, "deferred"),
    (Ended::Revoked, "revoked"),
];

/// The worker's metric handles.
pub(crate) struct Metrics {
    registry: MetricsRegistry,
    jobs: Vec<String>,
    queues: RwLock<HashMap<String, Arc<QueueSeries>>>,
    /// The worker's concurrency.
    pub(crate) concurrency: Gauge,
    /// 1 while every queue is consumed.
    pub(crate) connected: Gauge,
    /// Times consuming started again after a loss.
    pub(crate) reconnects: Counter,
    /// Batches completed by this worker's tracker.
    pub(crate) batches_completed: Counter,
}

/// The series of one queue.
pub(crate) struct QueueSeries {
    /// Deliveries being run or settled.
    pub(crate) in_flight: Gauge,
    jobs: HashMap<String, JobSeries>,
    unknown: JobSeries,
}

impl QueueSeries {
    fn new(registry: &MetricsRegistry, queue: &str, jobs: &[String]) -> Self {
        let in_flight =
            registry.gauge("lepus_jobs_in_flight", "Deliveries being run or settled, by queue.", &[("queue", queue)]);
        Self {
            in_flight,
            jobs: jobs.iter().map(|job| (job.clone(), JobSeries::new(registry, queue, job))).collect(),
            unknown: JobSeries::new(registry, queue, UNKNOWN_JOB),
        }
    }

    /// The series of `job` (`None`: a message that names no job).
    pub(crate) fn job(&self, job: Option<&str>) -> &JobSeries {
        job.and_then(|job| self.jobs.get(job)).unwrap_or(&self.unknown)
    }
}

/// The series of one job on one queue.
pub(crate) struct JobSeries {
    outcomes: [Counter; OUTCOMES.len()],
    duration: Histogram,
}

impl JobSeries {
    /// The series of `job` on `queue`; unknown jobs never run, so they have no run times.
    fn new(registry: &MetricsRegistry, queue: &str, job: &str) -> Self {
        let outcomes = OUTCOMES.map(|(_, outcome)| {
            registry.counter(
                "lepus_jobs_total",
                "Deliveries settled, by queue, job and outcome.",
                &[("queue", queue), ("job", job), ("outcome", outcome)],
            )
        });
        let duration = if job == UNKNOWN_JOB {
            Histogram::noop()
        } else {
            registry.histogram(
                "lepus_job_duration_seconds",
                "How long handlers ran, by queue and job.",
                &[("queue", queue), ("job", job)],
            )
        };
        Self { outcomes, duration }
    }

    /// Counts a delivery settled as `ended`.
    pub(crate) fn count(&self, ended: Ended) {
        if let Some(index) = OUTCOMES.iter().position(|(e, _)| *e == ended) {
            self.outcomes[index].increment(1);
        }
    }

    /// Records a handler's run time.
    pub(crate) fn ran_for(&self, elapsed: Duration) {
        self.duration.record(elapsed.as_secs_f64());
    }
}

impl Metrics {
    /// The series of `queues` × `jobs`, registered in `registry`.
    pub(crate) fn new<'a>(
        registry: &MetricsRegistry,
        queues: impl IntoIterator<Item = &'a str>,
        jobs: &[&str],
    ) -> Self {
        let jobs: Vec<String> = jobs.iter().map(|job| (*job).to_owned()).collect();
        let queues = queues
            .into_iter()
            .map(|queue| (queue.to_owned(), Arc::new(QueueSeries::new(registry, queue, &jobs))))
            .collect();
        Self {
            registry: registry.clone(),
            jobs,
            queues: RwLock::new(queues),
            concurrency: registry.gauge("lepus_worker_concurrency", "Jobs the worker runs at once.", &[]),
            connected: registry.gauge("lepus_broker_connected", "1 while the worker consumes all its queues.", &[]),
            reconnects: registry.counter(
                "lepus_broker_reconnects_total",
                "Times the worker consumed again after losing the broker.",
                &[],
            ),
            batches_completed: registry.counter(
                "lepus_batches_completed_total",
                "Batches whose last job this worker's batch tracker recorded.",
                &[],
            ),
        }
    }

    /// The series of `queue`, made now if it is new.
    pub(crate) fn queue(&self, queue: &str) -> Arc<QueueSeries> {
        if let Some(series) = self.queues.read().unwrap_or_else(PoisonError::into_inner).get(queue) {
            return Arc::clone(series);
        }
        let mut queues = self.queues.write().unwrap_or_else(PoisonError::into_inner);
        let made = queues
            .entry(queue.to_owned())
            .or_insert_with(|| Arc::new(QueueSeries::new(&self.registry, queue, &self.jobs)));
        Arc::clone(made)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_exists_at_zero_and_unknown_jobs_share_one() {
        let registry = MetricsRegistry::prometheus();
        let metrics = Metrics::new(&registry, ["q"], &["demo.add"]);
        let text = registry.render();
        for outcome in ["succeeded", "failed", "retried", "dead_lettered", "expired", "deferred", "revoked"] {
            let line = format!("lepus_jobs_total{{queue=\"q\",job=\"demo.add\",outcome=\"{outcome}\"}} 0\n");
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        let q = metrics.queue("q");
        q.job(Some("evil.name")).count(Ended::DeadLettered);
        q.job(None).count(Ended::DeadLettered);
        q.job(Some("demo.add")).ran_for(Duration::from_millis(30));
        let text = registry.render();
        assert!(
            text.contains("lepus_jobs_total{queue=\"q\",job=\"(unknown)\",outcome=\"dead_lettered\"} 2\n"),
            "{text}"
        );
        assert!(!text.contains("evil.name"), "{text}");
        assert!(
            text.contains("lepus_job_duration_seconds_bucket{queue=\"q\",job=\"demo.add\",le=\"0.05\"} 1\n"),
            "{text}"
        );
        metrics.queue("added").job(Some("demo.add")).count(Ended::Succeeded);
        let text = registry.render();
        assert!(
            text.contains("lepus_jobs_total{queue=\"added\",job=\"demo.add\",outcome=\"succeeded\"} 1\n"),
            "{text}"
        );
    }
}
