//! A complete job, both sides in one program: a worker that runs `examples.greet`, and a client
//! that calls it and prints the typed result.
//!
//! `cargo run -p lepus-worker --example greet` (needs RabbitMQ on localhost, or LEPUS_AMQP_URL).

use lepus::{Client, Job, Request, WorkQueue};
use lepus_worker::{JobContext, JobError, Worker, WorkerConfig};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Serialize, Deserialize)]
struct Greet {
    name: String,
}

impl Job for Greet {
    const NAME: &'static str = "examples.greet";
    type Output = String;
}

async fn greet(job: Greet, ctx: JobContext) -> Result<String, JobError> {
    Ok(format!("Hello, {}! (job {}, attempt {})", job.name, ctx.id(), ctx.attempt()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lepus::telemetry::init(lepus::telemetry::LogFormat::Text);
    let url = std::env::var("LEPUS_AMQP_URL").unwrap_or_else(|_| lepus::DEFAULT_AMQP_URL.to_owned());

    let client = Client::connect(&url).await?;
    client.declare_queue(&WorkQueue::new("examples")?).await?;

    let config = WorkerConfig::default().amqp_url(url).queues(["examples"]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(Worker::new(config).register(greet).run(async move { drop(stopped.await) }));

    let request = Request::new(Greet { name: "Lepus".into() }).queue("examples");
    let greeting = client.call(request, Duration::from_secs(10)).await?;
    println!("{greeting}");

    client.close().await?;
    stop.send(()).ok();
    worker.await??;
    Ok(())
}
