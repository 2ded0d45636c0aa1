//! `lepus-demo events`: a publisher and three subscribing services (orders → billing, shipping,
//! analytics; see [`crate::services`]). It starts the services (a worker each, in this process),
//! publishes `orders.created` then `orders.paid` for each order (keyed by the order id), waits
//! until every service handled what it should (billing and analytics both events of each order,
//! shipping each `orders.paid`), prints the counts, stops the services and deletes their queues
//! (not the shared `lepus.events*` exchanges and stream, which every publisher and service of the
//! broker uses). Events another publisher sends to `orders.*` meanwhile are handled and counted
//! apart. Exit code 0 when each service handled each of its events once and none was
//! dead-lettered, 1 otherwise, 130 when interrupted.

use crate::console::{errln, outln};
use crate::options::EventsOptions;
use crate::services::{self, DemoService, OrderCreated, OrderPaid};
use anyhow::{Context as _, bail};
use lepus::internal::topology::{ServiceTopology, inspect_queue, service_queue};
use lepus::lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lepus::{Client, Event};
use lepus_worker::{Worker, WorkerConfig, WorkerError};
use std::collections::HashSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long the services may take to consume.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A running service: its worker's stop signal and task.
struct Running {
    service: DemoService,
    stop: CancellationToken,
    task: JoinHandle<Result<(), WorkerError>>,
}

pub(crate) async fn run(amqp_url: &str, options: EventsOptions) -> ExitCode {
    let Some(client) = crate::connect::client(amqp_url).await else { return ExitCode::FAILURE };
    outln!("Connected to RabbitMQ at {}.", client.broker().url());
    let interrupted = lepus::internal::cancelled_by(lepus_worker::shutdown_signal());
    let prefix = format!("lepus-demo-{}", std::process::id());
    let mut running = start(amqp_url, &prefix);
    let outcome = tokio::select! {
        outcome = steps(&client, &mut running, &options) => outcome,
        () = interrupted.cancelled() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Err(e) = &outcome
        && !interrupted.is_cancelled()
    {
        errln!("lepus-demo events: {e:#}");
    }
    let stopped = stop_and_clean_up(&client, running).await;
    drop(client.close().await);
    match outcome {
        _ if interrupted.is_cancelled() => {
            errln!("\nlepus-demo events: interrupted; the services are stopped and their queues deleted.");
            ExitCode::from(130)
        }
        Ok(true) if stopped => {
            outln!("\nEvery service handled each of its events once, and the services' queues are deleted.");
            ExitCode::SUCCESS
        }
        Ok(_) => {
            errln!("\nlepus-demo events: a service did not handle what it should, or the clean-up failed (see above).");
            ExitCode::FAILURE
        }
        Err(_) => {
            errln!("\nlepus-demo events: stopped early because of the error above.");
            ExitCode::FAILURE
        }
    }
}

/// Starts each service's worker (no work queue, only the subscription).
fn start(amqp_url: &str, prefix: &str) -> Vec<Running> {
    services::all(prefix)
        .into_iter()
        .map(|(service, subscription)| {
            let config = WorkerConfig::default().amqp_url(amqp_url).queues(Vec::<String>::new()).remote_control(false);
            let worker = Worker::new(config).state(std::sync::Arc::clone(&service.tally)).subscribe(subscription);
            let stop = CancellationToken::new();
            let stopping = stop.clone();
            let task = tokio::spawn(worker.run(async move { stopping.cancelled().await }));
            Running { service, stop, task }
        })
        .collect()
}

/// The queues a service consumes (its queue, or its partitions).
fn queues(service: &DemoService) -> Vec<String> {
    topology(service).map(|t| t.queues().iter().map(|q| q.name().to_owned()).collect()).unwrap_or_default()
}

fn topology(service: &DemoService) -> lepus::Result<ServiceTopology> {
    ServiceTopology::new(&service.name, Vec::new(), service.partitions, lepus::DEFAULT_DELIVERY_LIMIT)
}

/// Waits for the services, publishes, waits for every handling and checks; `true` if each
/// service handled each of its events once.
async fn steps(client: &Client, running: &mut [Running], options: &EventsOptions) -> anyhow::Result<bool> {
    let started = Instant::now();
    for service in running.iter_mut() {
        let name = service.service.name.clone();
        let queues = queues(&service.service);
        let what = match service.service.partitions {
            Some(p) => format!("{p} partitions {}.p0..p{}, ordered by key", service_queue(&name), p - 1),
            None => service_queue(&name),
        };
        loop {
            if service.task.is_finished() {
                bail!("service {} stopped before it consumed", service.service.tally.service);
            }
            let mut consumed = true;
            for queue in &queues {
                consumed &= inspect_queue(client.broker(), queue).await?.is_some_and(|q| q.consumers > 0);
            }
            if consumed {
                break;
            }
            if started.elapsed() > READY_WITHIN {
                bail!("service {} did not consume within {READY_WITHIN:?}", service.service.tally.service);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        outln!("Service {:<9} is consuming {what}.", service.service.tally.service);
    }
    let orders = u64::from(options.orders);
    outln!();
    outln!("Publishing orders.created and orders.paid for {orders} orders (keyed by the order id)…");
    let (mut created, mut paid) = (HashSet::new(), HashSet::new());
    let mut last_shown = Instant::now();
    for order in 1..=orders {
        let total_cents = 1000 + order * 37 % 9000;
        created.insert(client.publish(OrderCreated { order, total_cents }).await?.to_string());
        paid.insert(client.publish(OrderPaid { order, paid_cents: total_cents }).await?.to_string());
        if last_shown.elapsed() >= Duration::from_secs(1) || order == orders {
            last_shown = Instant::now();
            outln!("  published {}/{} events", 2 * order, 2 * orders);
        }
    }
    let expected = |service: &DemoService| if service.created { 2 * orders } else { orders };
    let mine = |service: &DemoService| {
        service.tally.handled().into_iter().filter(|h| created.contains(&h.id) || paid.contains(&h.id)).count() as u64
    };
    let deadline = Instant::now() + options.timeout;
    let mut last_shown = Instant::now();
    loop {
        let done = running.iter().all(|r| mine(&r.service) >= expected(&r.service));
        if done || Instant::now() >= deadline || last_shown.elapsed() >= Duration::from_secs(1) {
            let counts: Vec<String> = running
                .iter()
                .map(|r| format!("{} {}/{}", r.service.tally.service, mine(&r.service), expected(&r.service)))
                .collect();
            outln!("  handled: {}", counts.join(", "));
            last_shown = Instant::now();
        }
        if done || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Late duplicates or strays would show up now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    outln!();
    outln!("Summary:");
    let mut correct = true;
    for r in running.iter() {
        let service = &r.service;
        let handled = service.tally.handled();
        let of = |ids: &HashSet<String>, name: &str| {
            let got: Vec<&str> =
                handled.iter().filter(|h| ids.contains(&h.id) && h.name == name).map(|h| h.id.as_str()).collect();
            let distinct = got.iter().collect::<HashSet<_>>().len();
            (got.len() as u64, distinct as u64)
        };
        let (c, c_distinct) = of(&created, OrderCreated::NAME);
        let (p, p_distinct) = of(&paid, OrderPaid::NAME);
        let others = handled.len() as u64 - c - p;
        let want_created = if service.created { orders } else { 0 };
        let dead = dead_letters(client, service).await?;
        let ok = c == want_created && c_distinct == want_created && p == orders && p_distinct == orders && dead == 0;
        correct &= ok;
        outln!(
            "  {:<9} handled {}/{} events: {c}/{want_created} orders.created, {p}/{orders} orders.paid; {dead} dead letters{}{}",
            service.tally.service,
            c + p,
            expected(service),
            if others > 0 { format!("; {others} from other publishers") } else { String::new() },
            if ok { "  ok" } else { "  WRONG" },
        );
    }
    Ok(correct)
}

/// The dead letters in a service's dead-letter queue.
async fn dead_letters(client: &Client, service: &DemoService) -> anyhow::Result<u32> {
    let dlq = topology(service)?.dead_letter_queue();
    Ok(inspect_queue(client.broker(), &dlq).await?.map_or(0, |q| q.messages))
}

/// Stops the services' workers and deletes their queues (and shipping's headers exchange);
/// `true` if all went well.
async fn stop_and_clean_up(client: &Client, running: Vec<Running>) -> bool {
    outln!();
    outln!("Stopping the services and deleting their queues:");
    let mut clean = true;
    for r in running {
        r.stop.cancel();
        match r.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                errln!("lepus-demo events: service {} failed: {e}", r.service.tally.service);
                clean = false;
            }
            Err(e) => {
                errln!("lepus-demo events: service {} panicked: {e}", r.service.tally.service);
                clean = false;
            }
        }
        let Ok(topology) = topology(&r.service) else { continue };
        let mut names = queues(&r.service);
        names.push(topology.dead_letter_queue());
        let mut deleted = Vec::new();
        for name in names {
            match delete_queue(client, &name).await {
                Ok(true) => deleted.push(name),
                Ok(false) => {}
                Err(e) => {
                    errln!(
                        "lepus-demo events: cannot delete queue {name}: {e:#}; delete it with `rabbitmqctl delete_queue {name}`"
                    );
                    clean = false;
                }
            }
        }
        for exchange in topology.exchanges() {
            match delete_exchange(client, &exchange).await {
                Ok(()) => deleted.push(format!("exchange {exchange}")),
                Err(e) => {
                    errln!("lepus-demo events: cannot delete exchange {exchange}: {e:#}");
                    clean = false;
                }
            }
        }
        outln!("  {:<9} {}", r.service.tally.service, deleted.join(", "));
    }
    clean
}

async fn delete_queue(client: &Client, name: &str) -> anyhow::Result<bool> {
    if inspect_queue(client.broker(), name).await?.is_none() {
        return Ok(false);
    }
    let channel = client.broker().channel().await?;
    let deleted = channel.queue_delete(name.into(), QueueDeleteOptions::default()).await;
    drop(channel.close(200, "deleted".into()).await);
    deleted.map(|_| true).context("queue.delete")
}

async fn delete_exchange(client: &Client, name: &str) -> anyhow::Result<()> {
    let channel = client.broker().channel().await?;
    let deleted = channel.exchange_delete(name.into(), ExchangeDeleteOptions::default()).await;
    drop(channel.close(200, "deleted".into()).await);
    deleted.context("exchange.delete")
}
