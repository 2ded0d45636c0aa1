//! The worker's metrics. Their names and labels are an operator contract (the README lists them):
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `lepus_jobs_total` | `queue`, `job`, `outcome` | settled deliveries: `succeeded`, `failed` (for good), `retried`, `dead_lettered`, `expired`, `deferred` |
//! | `lepus_job_duration_seconds` | `queue`, `job` | histogram of handler run time |
//! | `lepus_jobs_in_flight` | `queue` | deliveries being run or settled |
//! | `lepus_worker_concurrency` | | the configured concurrency |
//! | `lepus_broker_connected` | | 1 while the worker consumes, else 0 |
//! | `lepus_broker_reconnects_total` | | times the worker consumed again after a loss |
//! | `lepus_batches_completed_total` | | batches this worker's tracker completed |
//!
//! Every series exists from the start, at 0, for every queue and registered job: the handles are
//! made once and found without a lock. A message whose job is not registered here (or that names
//! none) counts under `job="(unknown)"`, so hostile names cannot make new series.

use crate::outcome::Ended;
use lepus::internal::endpoint::MetricsRegistry;
use metrics::{Counter, Gauge, Histogram};
use std::collections::HashMap;
use std::time::Duration;

/// The `job` label of messages whose job this worker does not run.
pub(crate) const UNKNOWN_JOB: &str = "(unknown)";

const OUTCOMES: [(Ended, &str); 6] = [
    (Ended::Succeeded, "succeeded"),
    (Ended::Failed, "failed"),
    (Ended::Retried, "retried"),
    (Ended::DeadLettered, "dead_lettered"),
    (Ended::Expired, "expired"),
    (Ended::Deferred, "deferred"),
];

/// The worker's metric handles.
pub(crate) struct Metrics {
    queues: HashMap<String, QueueSeries>,
    /// The worker's concurrency.
    pub(crate) concurrency: Gauge,
    /// 1 while every queue is consumed.
    pub(crate) connected: Gauge,
    /// Times consuming started again after a loss.
    pub(crate) reconnects: Counter,
    /// Batches completed by this worker's tracker.
    pub(crate) batches_completed: Counter,
}

struct QueueSeries {
    in_flight: Gauge,
    jobs: HashMap<String, JobSeries>,
    unknown: JobSeries,
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
        let queues = queues
            .into_iter()
            .map(|queue| {
                let series = QueueSeries {
                    in_flight: registry.gauge(
                        "lepus_jobs_in_flight",
                        "Deliveries being run or settled, by queue.",
                        &[("queue", queue)],
                    ),
                    jobs: jobs.iter().map(|job| ((*job).to_owned(), JobSeries::new(registry, queue, job))).collect(),
                    unknown: JobSeries::new(registry, queue, UNKNOWN_JOB),
                };
                (queue.to_owned(), series)
            })
            .collect();
        Self {
            queues,
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

    /// The series of `job` on `queue` (`job` `None`: a message that names no job).
    pub(crate) fn job(&self, queue: &str, job: Option<&str>) -> Option<&JobSeries> {
        let series = self.queues.get(queue)?;
        Some(job.and_then(|job| series.jobs.get(job)).unwrap_or(&series.unknown))
    }

    /// The in-flight gauge of `queue`.
    pub(crate) fn in_flight(&self, queue: &str) -> Option<&Gauge> {
        self.queues.get(queue).map(|series| &series.in_flight)
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
        for outcome in ["succeeded", "failed", "retried", "dead_lettered", "expired", "deferred"] {
            let line = format!("lepus_jobs_total{{queue=\"q\",job=\"demo.add\",outcome=\"{outcome}\"}} 0\n");
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        metrics.job("q", Some("evil.name")).expect("queue").count(Ended::DeadLettered);
        metrics.job("q", None).expect("queue").count(Ended::DeadLettered);
        metrics.job("q", Some("demo.add")).expect("queue").ran_for(Duration::from_millis(30));
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
        assert!(metrics.job("other", None).is_none());
    }
}
