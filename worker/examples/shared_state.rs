//! Shared state: handlers reach application state (here an in-memory store standing for a
//! database pool) through a `State<T>` argument, with no global and no clone-into-closure; and a
//! handler can take its job alone. The worker and a client in one program.
//!
//! `cargo run -p lepus-worker --example shared_state` (needs RabbitMQ on localhost, or
//! LEPUS_AMQP_URL).

use lepus::{Client, Job, Request, WorkQueue};
use lepus_worker::{JobError, State, Worker, WorkerConfig};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The application's state: cheap to clone, shared by every job.
#[derive(Clone, Default)]
struct Store(Arc<Mutex<HashMap<String, u64>>>);

#[derive(Serialize, Deserialize)]
struct CountVisit {
    page: String,
}

impl Job for CountVisit {
    const NAME: &'static str = "examples.count_visit";
    type Output = u64;
}

async fn count_visit(job: CountVisit, State(store): State<Store>) -> anyhow::Result<u64> {
    let mut counts = store.0.lock().map_err(|_| anyhow::anyhow!("the store is poisoned"))?;
    let count = counts.entry(job.page).or_default();
    *count += 1;
    Ok(*count)
}

#[derive(Serialize, Deserialize)]
struct Slug(String);

impl Job for Slug {
    const NAME: &'static str = "examples.slug";
    type Output = String;
}

async fn slug(job: Slug) -> Result<String, JobError> {
    let slug: String = job.0.to_lowercase().split_whitespace().collect::<Vec<_>>().join("-");
    if slug.is_empty() {
        return Err(JobError::permanent("nothing to slugify").exception("builtins.ValueError"));
    }
    Ok(slug)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lepus::telemetry::init(lepus::telemetry::LogFormat::Text);
    let url = std::env::var("LEPUS_AMQP_URL").unwrap_or_else(|_| lepus::DEFAULT_AMQP_URL.to_owned());
    let client = Client::connect(&url).await?;
    client.declare_queue(&WorkQueue::new("examples")?).await?;

    let store = Store::default();
    let worker = Worker::new(WorkerConfig::default().amqp_url(url).queues(["examples"]))
        .state(store.clone())
        .register(count_visit)
        .register(slug);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move { drop(stopped.await) }));

    for _ in 0..3 {
        let visit = Request::new(CountVisit { page: "/pricing".into() }).queue("examples");
        println!("/pricing visited {} time(s)", client.call(visit, Duration::from_secs(10)).await?);
    }
    let pending = client.submit(Request::new(Slug("Hello Shared State".into())).queue("examples")).await?;
    println!("slug: {}", pending.await?);
    println!("the application sees the same store: {:?}", store.0.lock().map(|counts| counts.clone()).ok());

    client.close().await?;
    stop.send(()).ok();
    running.await??;
    Ok(())
}
