//! Handlers reach application state without globals: `Worker::state(value)` and a `State<T>`
//! argument (or `JobContext::state`); a handler may take its job alone; a handler that needs
//! state nobody added stops the worker at start-up, before it connects. The worker runs in this
//! test process, as a library user embeds it.

use lepus::{Job, Request};
use lepus_tests::{TestQueue, amqp_url, connect};
use lepus_worker::{JobContext, JobError, State, Worker, WorkerConfig, WorkerError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(20);

/// The application's state: a visit counter shared with the test.
#[derive(Debug, Clone, Default)]
struct Visits(Arc<AtomicU64>);

/// A second state of another type, read through the context.
#[derive(Debug, Clone)]
struct Greeting(&'static str);

#[derive(Debug, Serialize, Deserialize)]
struct Visit {
    page: String,
}

impl Job for Visit {
    const NAME: &'static str = "state.visit";
    type Output = String;
}

async fn visit(job: Visit, State(visits): State<Visits>, ctx: JobContext) -> anyhow::Result<String> {
    let count = visits.0.fetch_add(1, Ordering::Relaxed) + 1;
    let greeting = ctx.state::<Greeting>().map_or("?", |g| g.0);
    Ok(format!("{greeting} {}: visit {count}", job.page))
}

#[derive(Debug, Serialize, Deserialize)]
struct Shout(String);

impl Job for Shout {
    const NAME: &'static str = "state.shout";
    type Output = String;
}

async fn shout(job: Shout) -> Result<String, JobError> {
    Ok(job.0.to_uppercase())
}

#[tokio::test]
async fn handlers_take_state_and_the_context_or_nothing_at_all() {
    let queue = TestQueue::declare("state").await;
    let visits = Visits::default();
    let config = WorkerConfig::default().amqp_url(amqp_url()).queues([queue.name()]);
    let worker = Worker::new(config).state(visits.clone()).state(Greeting("hello")).register(visit).register(shout);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async { drop(stopped.await) }));
    queue.wait_for_consumers(1).await;
    let client = connect().await;

    for count in 1..=3 {
        let request = Request::new(Visit { page: "/home".into() }).queue(queue.name());
        assert_eq!(client.call(request, TIMEOUT).await.expect("a visit"), format!("hello /home: visit {count}"));
    }
    assert_eq!(visits.0.load(Ordering::Relaxed), 3, "the handler's state is the application's");
    assert_eq!(client.call(Request::new(Shout("hi".into())).queue(queue.name()), TIMEOUT).await.expect("shout"), "HI");

    client.close().await.expect("closed");
    stop.send(()).expect("the worker runs");
    running.await.expect("joined").expect("the worker stopped cleanly");
}

#[tokio::test]
async fn a_handler_needing_state_nobody_added_stops_the_worker_at_start_up() {
    // The broker URL points nowhere: the check comes before any connection.
    let config = WorkerConfig::default().amqp_url("amqp://guest:guest@127.0.0.1:1/%2f");
    let started = Worker::new(config).register(visit).run(std::future::pending()).await;
    match started {
        Err(WorkerError::Config(reason)) => {
            assert!(reason.contains("state.visit") && reason.contains("Visits"), "{reason}");
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}
