//! The `lepus-worker` role with `LEPUS_BENCH_SERVICE` set (`--fanout`): a Lepus worker process
//! that is one data-event service and nothing else: no work queue, the subscription of service
//! `LEPUS_BENCH_SERVICE` to [`Happened`] with a trivial handler, unordered, `concurrency` events
//! at once (also its consumer's prefetch). It reports its settled deliveries from
//! [`lepus_worker::Worker::stats`] as every bench worker does ([`crate::watcher`]).

use crate::role::WorkerSpec;
use lepus_worker::{Subscription, Worker, WorkerConfig};
use serde::{Deserialize, Serialize};
use std::process::ExitCode;

/// The bench's event: a sequence number, about the size of a small application event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Happened {
    /// The event's number in its round.
    pub(crate) seq: u64,
    /// What a small order event carries besides.
    pub(crate) total_cents: u64,
}

impl lepus::Event for Happened {
    const NAME: &'static str = "bench.fanout.happened";
}

/// The trivial handler: the event is decoded into its type, and that is all.
async fn handle(event: Happened) -> anyhow::Result<()> {
    std::hint::black_box(event);
    Ok(())
}

pub(crate) fn run(spec: &WorkerSpec) -> ExitCode {
    let Some(service) = spec.service.clone() else {
        eprintln!("lepus-bench service: no service named");
        return ExitCode::FAILURE;
    };
    lepus::telemetry::init(lepus::telemetry::LogFormat::default());
    let config = WorkerConfig::default()
        .amqp_url(spec.amqp_url.clone())
        .queues(Vec::<String>::new())
        .concurrency(spec.concurrency)
        .delivery_limit(lepus::DEFAULT_DELIVERY_LIMIT);
    let worker = Worker::new(config).subscribe(Subscription::service(service).on(handle));
    let stats = worker.stats();
    if let Err(e) = crate::watcher::spawn(&spec.targets, move || stats.settled()) {
        eprintln!("lepus-bench service: cannot start the reporting thread: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("lepus-bench service: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(worker.run(lepus::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lepus-bench service: {e}");
            ExitCode::FAILURE
        }
    }
}
