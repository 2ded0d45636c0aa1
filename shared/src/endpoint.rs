//! The HTTP endpoint of a worker or scheduler process: `/metrics` in Prometheus's text format,
//! `/livez` (200 while the process runs) and `/readyz` (200 while the process does its work, 503
//! with a one-line reason otherwise). Metrics live in a [`MetricsRegistry`]: a Prometheus recorder of the
//! `metrics` crate, or, with metrics off, nothing at all (every handle it gives is a no-op).

use crate::error::{Error, Result};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Buckets of every `*_duration_seconds` histogram: from 5 ms to an hour.
const DURATION_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// How often histogram samples are folded into their buckets between scrapes (by a thread of
/// the endpoint's own, off the runtime that runs jobs).
const UPKEEP: Duration = Duration::from_secs(1);

/// The metrics of one process. Cheap to clone; clones share the metrics.
#[derive(Clone, Default)]
pub struct MetricsRegistry {
    prometheus: Option<Arc<PrometheusRecorder>>,
}

impl std::fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsRegistry").field("on", &self.prometheus.is_some()).finish()
    }
}

/// Where metrics are registered: the `metrics` crate's metadata of Lepus's own metrics.
static METADATA: Metadata<'static> = Metadata::new("lepus", Level::INFO, Some(module_path!()));

impl MetricsRegistry {
    /// A registry that keeps metrics for `/metrics`.
    #[must_use]
    pub fn prometheus() -> Self {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), DURATION_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        Self { prometheus: Some(Arc::new(builder.build_recorder())) }
    }

    /// A registry that keeps nothing: metrics are off.
    #[must_use]
    pub fn off() -> Self {
        Self::default()
    }

    /// Whether metrics are kept.
    #[must_use]
    pub fn is_on(&self) -> bool {
        self.prometheus.is_some()
    }

    /// The counter `name` with `labels`, described by `help`.
    pub fn counter(&self, name: &'static str, help: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.prometheus.as_ref().map_or_else(Counter::noop, |recorder| {
            recorder.describe_counter(KeyName::from_const_str(name), None, SharedString::const_str(help));
            recorder.register_counter(&key(name, labels), &METADATA)
        })
    }

    /// The gauge `name` with `labels`, described by `help`.
    pub fn gauge(&self, name: &'static str, help: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.prometheus.as_ref().map_or_else(Gauge::noop, |recorder| {
            recorder.describe_gauge(KeyName::from_const_str(name), None, SharedString::const_str(help));
            recorder.register_gauge(&key(name, labels), &METADATA)
        })
    }

    /// The histogram `name` with `labels`, described by `help`.
    pub fn histogram(&self, name: &'static str, help: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        self.prometheus.as_ref().map_or_else(Histogram::noop, |recorder| {
            recorder.describe_histogram(KeyName::from_const_str(name), None, SharedString::const_str(help));
            recorder.register_histogram(&key(name, labels), &METADATA)
        })
    }

    /// Every metric in Prometheus's text format (empty with metrics off).
    #[must_use]
    pub fn render(&self) -> String {
        self.prometheus.as_ref().map(|recorder| recorder.handle().render()).unwrap_or_default()
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels.iter().map(|(k, v)| Label::new(*k, (*v).to_owned())).collect();
    Key::from_parts(name, labels)
}

/// What `/readyz` asks: `Ok` while the process does its work, else why not, in one line.
pub type Readiness = Arc<dyn Fn() -> std::result::Result<(), String> + Send + Sync>;

/// The endpoint of a process while it serves, if the process has one.
#[derive(Debug)]
pub struct Serving {
    address: Option<SocketAddr>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Serving {
    /// Serves `registry` and `ready` on `address` (port 0: any free port), if there is one. A taken
    /// port fails at once, so that a process with a bad address fails at start-up.
    pub async fn start(address: Option<SocketAddr>, registry: MetricsRegistry, ready: Readiness) -> Result<Self> {
        let stop = CancellationToken::new();
        let Some(address) = address else { return Ok(Self { address: None, stop, task: None }) };
        let endpoint = Endpoint::bind(address).await?;
        let address = Some(endpoint.address);
        Ok(Self { address, task: Some(endpoint.serve(registry, ready, stop.clone())), stop })
    }

    /// The address served, if any.
    #[must_use]
    pub fn address(&self) -> Option<SocketAddr> {
        self.address
    }

    /// Stops serving.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Some(task) = self.task {
            drop(task.await);
        }
    }
}

/// A bound endpoint, not yet serving.
#[derive(Debug)]
struct Endpoint {
    listener: TcpListener,
    address: SocketAddr,
}

impl Endpoint {
    /// Binds `address`.
    async fn bind(address: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(address).await.map_err(|source| Error::Listen { address, source })?;
        let address = listener.local_addr().map_err(|source| Error::Listen { address, source })?;
        Ok(Self { listener, address })
    }

    /// Serves `/metrics`, `/livez` and `/readyz` until `stop` is cancelled.
    fn serve(
        self,
        registry: MetricsRegistry,
        ready: Readiness,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let Endpoint { listener, address } = self;
        // The upkeep thread ends when `upkeep` (its channel's sender) is dropped, at the end.
        let upkeep = registry.prometheus.clone().map(|recorder| {
            let (upkeep, ended) = std::sync::mpsc::channel::<()>();
            let started = std::thread::Builder::new().name("lepus-metrics-upkeep".into()).spawn(move || {
                let handle = recorder.handle();
                while ended.recv_timeout(UPKEEP) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                    handle.run_upkeep();
                }
            });
            if let Err(e) = started {
                tracing::warn!(error = %e, "no metrics upkeep thread: histogram samples are folded at each scrape only");
            }
            upkeep
        });
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/livez", get(|| async { (StatusCode::OK, "alive\n") }))
            .route("/readyz", get(readyz))
            .with_state(Arc::new(Served { registry, ready }));
        tracing::info!(%address, "serving /metrics, /livez and /readyz");
        tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
            if let Err(e) = served {
                tracing::error!(%address, error = %e, "the metrics endpoint stopped");
            }
            drop(upkeep);
        })
    }
}

struct Served {
    registry: MetricsRegistry,
    ready: Readiness,
}

async fn metrics(State(served): State<Arc<Served>>) -> impl IntoResponse {
    // Rendering folds every histogram sample since the last upkeep: not on a runtime thread.
    let registry = served.registry.clone();
    let page = tokio::task::spawn_blocking(move || registry.render()).await.unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], page)
}

async fn readyz(State(served): State<Arc<Served>>) -> impl IntoResponse {
    match (served.ready)() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_renders_counters_gauges_and_histograms_with_buckets_and_an_off_one_renders_nothing() {
        let registry = MetricsRegistry::prometheus();
        registry.counter("t_jobs_total", "Jobs.", &[("queue", "q")]).increment(3);
        registry.gauge("t_connected", "Connected.", &[]).set(1.0);
        registry.histogram("t_job_duration_seconds", "Run time.", &[("queue", "q")]).record(0.2);
        let text = registry.render();
        assert!(
            text.contains("# HELP t_jobs_total Jobs.\n# TYPE t_jobs_total counter\nt_jobs_total{queue=\"q\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("t_connected 1\n"), "{text}");
        assert!(text.contains("t_job_duration_seconds_bucket{queue=\"q\",le=\"0.25\"} 1\n"), "{text}");
        assert!(text.contains("t_job_duration_seconds_count{queue=\"q\"} 1\n"), "{text}");

        let off = MetricsRegistry::off();
        off.counter("t_jobs_total", "Jobs.", &[]).increment(1);
        assert_eq!(off.render(), "");
    }
}
