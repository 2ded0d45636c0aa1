//! `--fanout`: data events published and fanned out to 3 services, Lepus against raw lapin doing
//! the same fan-out in the same run.
//!
//! Each round runs both sides, alternating which goes first, each with 3 services of its own (a
//! worker process each, `--concurrency` events at once, which is also its consumer's prefetch)
//! and N events (`--jobs`, default 50,000) published with up to `--window` awaiting their
//! confirm:
//!
//! - Lepus: `Client::publish` of [`Happened`] events, each publish a task of its own, through the
//!   broker-wide `lepus.events.in` (to the stream `lepus.events.log` and the topic exchange
//!   `lepus.events`); the services are [`crate::lepus_service_role`] workers, subscribed
//!   (unordered) to the event's name with a trivial handler, their queues
//!   `lepus.service.bench-<pid>-<round>-<service>`.
//! - raw lapin: the same publishes (the very bytes of a Lepus envelope) into a copy of that
//!   topology under the round's own names, with its own stream, and 3 raw worker processes that
//!   ack each delivery ([`crate::raw_fanout`], [`crate::raw_worker_role`]).
//!
//! Each side is timed from just before its first publish to its last confirm (events/s
//! published) and to the moment the last of the 3 services settled its N-th event (events/s
//! fanned out; deliveries/s is 3 times that). The services' CPU time over that span, per event,
//! is the cost of handling one event 3 times. Afterwards each service queue must be empty and
//! its dead-letter queue too. What the round declared is deleted, except that the Lepus events
//! stay in the shared stream `lepus.events.log`, as every published event does (7 days, 5 GiB).

use crate::admin::Admin;
use crate::figures::{rate, spread};
use crate::lepus_service_role::Happened;
use crate::options::Options;
use crate::proc_status;
use crate::progress::Progress;
use crate::raw_fanout::{self, RawFanout};
use crate::role::{Side, WorkerSpec};
use crate::worker_process::WorkerProcess;
use anyhow::{Context, bail};
use lepus::internal::topology::{ServiceTopology, dead_letter_queue, declare_events, service_queue};
use lepus::{Client, ClientOptions, Event, EventLog};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The three services every event fans out to.
const SERVICES: [&str; 3] = ["billing", "shipping", "analytics"];

/// Lepus's fan-out rate over raw lapin's that the mode aims at.
const TARGET: f64 = 0.8;

/// How long the services may take to attach their consumers, and how long they idle first.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_secs(1);

/// What one side measured in one round.
#[derive(Debug, Clone, Copy, Default)]
struct Fanned {
    /// Events per second, first publish to the last confirm.
    published_per_s: f64,
    /// Events per second, first publish to the last of the 3N handlings.
    fanned_per_s: f64,
    /// The 3 services' CPU time (user and system) per event, each handling it once.
    service_cpu_us: f64,
    /// This process's CPU time per event published.
    publisher_cpu_us: f64,
}

pub(crate) async fn run(options: &Options, admin: &Admin) -> anyhow::Result<()> {
    let n = options.events();
    let pid = std::process::id();
    println!(
        "lepus-bench --fanout: events published and fanned out to 3 services, Lepus against raw lapin, in one run"
    );
    println!(
        "  both sides: {n} events, persistent, mandatory, confirmed, up to {} awaiting their confirm;",
        options.window
    );
    println!("    one publish to a fanout exchange that feeds a stream and a topic exchange with 3 quorum service");
    println!(
        "    queues bound; 3 services, a worker process each, {} events at once (prefetch {}), a trivial handler",
        options.concurrency, options.concurrency
    );
    println!("  Lepus: Client::publish to lepus.events.in (stream lepus.events.log), Subscription workers;");
    println!("  raw lapin: the same bytes into a copy of that topology of its own (own stream), ack per delivery");
    println!("  timed from just before the first publish to the last confirm (published) and to the last of the");
    println!("    3N handlings (fanned out); {} round(s), alternating which side goes first", options.rounds);
    println!();
    let mut rounds: Vec<[Fanned; 2]> = Vec::new();
    for round in 1..=options.rounds {
        let order = if round % 2 == 1 { [Side::Raw, Side::Lepus] } else { [Side::Lepus, Side::Raw] };
        let mut sides = [Fanned::default(); 2];
        for side in order {
            let label = format!("round {round}/{}, {side}", options.rounds);
            let prefix = format!("bench-{pid}-{round}-{}", tag(side));
            let measured = measure(options, admin, &prefix, side, n, &label).await;
            sides[usize::from(side == Side::Lepus)] = measured.with_context(|| label.clone())?;
        }
        let [raw, lepus] = sides;
        println!(
            "round {round} of {} ({} first): fanned out, events/s: raw lapin {:.0}, Lepus {:.0}, Lepus/raw {:.2}; \
             published: raw {:.0}, Lepus {:.0}",
            options.rounds,
            order[0],
            raw.fanned_per_s,
            lepus.fanned_per_s,
            lepus.fanned_per_s / raw.fanned_per_s,
            raw.published_per_s,
            lepus.published_per_s,
        );
        rounds.push(sides);
    }
    let of = |figure: fn(&[Fanned; 2]) -> f64| spread(&rounds.iter().map(figure).collect::<Vec<_>>());
    let show = |(median, low, high): (f64, f64, f64), decimals: usize| {
        format!("{median:.decimals$} [{low:.decimals$}–{high:.decimals$}]")
    };
    println!();
    println!("summary over {} round(s): median [min–max]", options.rounds);
    let line = |what: &str, figure: String| println!("  {what:<50} {figure}");
    line("raw lapin, events/s published (confirmed)", show(of(|r| r[0].published_per_s), 0));
    line("Lepus, events/s published (confirmed)", show(of(|r| r[1].published_per_s), 0));
    line("raw lapin, events/s fanned out to 3 services", show(of(|r| r[0].fanned_per_s), 0));
    line("Lepus, events/s fanned out to 3 services", show(of(|r| r[1].fanned_per_s), 0));
    line("raw lapin, deliveries/s", show(of(|r| 3.0 * r[0].fanned_per_s), 0));
    line("Lepus, deliveries/s", show(of(|r| 3.0 * r[1].fanned_per_s), 0));
    line("Lepus/raw, published", show(of(|r| r[1].published_per_s / r[0].published_per_s), 2));
    let ratio = of(|r| r[1].fanned_per_s / r[0].fanned_per_s);
    line("Lepus/raw, fanned out", show(ratio, 2));
    line("services' CPU per event (3 handlings), µs, raw", show(of(|r| r[0].service_cpu_us), 1));
    line("services' CPU per event (3 handlings), µs, Lepus", show(of(|r| r[1].service_cpu_us), 1));
    line("publisher CPU per event, µs, raw", show(of(|r| r[0].publisher_cpu_us), 1));
    line("publisher CPU per event, µs, Lepus", show(of(|r| r[1].publisher_cpu_us), 1));
    let met = if ratio.0 >= TARGET { "met" } else { "not met" };
    println!("  target Lepus/raw fanned out ≥ {TARGET}: {met}");
    drop(std::fs::remove_dir_all(logs()));
    Ok(())
}

fn tag(side: Side) -> &'static str {
    match side {
        Side::Raw => "raw",
        Side::Lepus => "lepus",
    }
}

fn logs() -> PathBuf {
    std::env::temp_dir().join(format!("lepus-bench-{}", std::process::id()))
}

/// One side of one round, its topology declared first and deleted afterwards whatever happened.
async fn measure(
    options: &Options,
    admin: &Admin,
    prefix: &str,
    side: Side,
    n: u64,
    label: &str,
) -> anyhow::Result<Fanned> {
    let raw = RawFanout::new(prefix, &SERVICES);
    let (queues, services) = match side {
        Side::Raw => (raw.service_queues(), vec![None; SERVICES.len()]),
        Side::Lepus => {
            let names: Vec<String> = SERVICES.iter().map(|s| format!("{prefix}-{s}")).collect();
            (names.iter().map(|s| service_queue(s)).collect(), names.into_iter().map(Some).collect())
        }
    };
    let declared = match side {
        Side::Raw => raw.declare(admin).await,
        Side::Lepus => declare_services(admin, &services).await,
    };
    let measured = match declared {
        Ok(()) => timed(options, admin, &raw, &queues, &services, side, n, label).await,
        Err(e) => Err(e),
    };
    match side {
        Side::Raw => raw.delete(admin).await,
        Side::Lepus => {
            let all: Vec<String> = queues.iter().flat_map(|q| [dead_letter_queue(q), q.clone()]).collect();
            admin.delete(&all).await;
        }
    }
    measured
}

/// Declares the event topology and the Lepus services' queues, as their workers will (so that
/// the orchestrator can wait for their consumers).
async fn declare_services(admin: &Admin, services: &[Option<String>]) -> anyhow::Result<()> {
    let channel = admin.channel().await?;
    declare_events(&channel, &EventLog::default()).await.context("cannot declare the event topology")?;
    for service in services.iter().flatten() {
        let topology =
            ServiceTopology::new(service, vec![Happened::NAME.to_owned()], None, lepus::DEFAULT_DELIVERY_LIMIT)?;
        topology.declare(&channel).await.with_context(|| format!("cannot declare service {service}"))?;
    }
    drop(channel.close(200, "declared".into()).await);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn timed(
    options: &Options,
    admin: &Admin,
    raw: &RawFanout,
    queues: &[String],
    services: &[Option<String>],
    side: Side,
    n: u64,
    label: &str,
) -> anyhow::Result<Fanned> {
    let mut workers = Vec::new();
    for ((queue, service), name) in queues.iter().zip(services).zip(SERVICES) {
        let spec = WorkerSpec::lepus(&options.amqp_url, queue, options.concurrency);
        // Each side publishes one untimed event first: N + 1 handlings in all.
        let spec = WorkerSpec { side, targets: vec![n + 1], service: service.clone(), ..spec };
        let log = logs().join(format!("{}-{name}.log", queue.replace('/', "_")));
        let mut worker = WorkerProcess::start(&spec, &log)?;
        admin.await_consumer(queue, &mut worker, READY_TIMEOUT).await?;
        workers.push(worker);
    }
    tokio::time::sleep(SETTLE).await;
    let confirmed = Arc::new(AtomicU64::new(0));
    let mut counters = vec![("confirmed", Arc::clone(&confirmed))];
    counters.extend(SERVICES.iter().zip(&workers).map(|(name, worker)| (*name, worker.settled())));
    let progress = Progress::start(format!("{label}: {n} events to 3 services"), n + 1, counters);
    let services_cpu =
        |workers: &[WorkerProcess]| -> anyhow::Result<f64> { workers.iter().map(WorkerProcess::cpu_seconds).sum() };
    let cpu_before = (services_cpu(&workers)?, proc_status::cpu_seconds(std::process::id())?);
    let window = options.window as usize;
    let start = Instant::now();
    let published = match side {
        Side::Raw => raw_fanout::publish(&options.amqp_url, &raw.inbound(), n, window, &confirmed).await,
        Side::Lepus => publish_lepus(&options.amqp_url, n, window, &confirmed).await,
    };
    let published = published?;
    let publisher_cpu = proc_status::cpu_seconds(std::process::id())? - cpu_before.1;
    let limit = Duration::from_secs(60) + Duration::from_millis(5).saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
    let mut last = start;
    for worker in &mut workers {
        last = last.max(worker.reached(n + 1, limit).await?);
    }
    let service_cpu = services_cpu(&workers)? - cpu_before.0;
    let fanned = last.saturating_duration_since(start);
    // A quorum queue applies acks through its log: a consumer that closes right after its last
    // ack may see acked messages returned (the raw worker does not wait). Let them be applied.
    tokio::time::sleep(SETTLE).await;
    for worker in workers {
        worker.stop().await?;
    }
    for queue in queues {
        let (left, dead) = (admin.message_count(queue).await?, admin.message_count(&dead_letter_queue(queue)).await?);
        if left != 0 || dead != 0 {
            bail!("{queue} holds {left} events and its dead-letter queue {dead} after the run");
        }
    }
    let figures = Fanned {
        published_per_s: rate(n, published),
        fanned_per_s: rate(n, fanned),
        service_cpu_us: service_cpu * 1e6 / n as f64,
        publisher_cpu_us: publisher_cpu * 1e6 / n as f64,
    };
    progress.finish(&format!(
        "published {:.0} events/s (all confirmed after {:.2} s), fanned out {:.0} events/s (all handled by the 3 \
         services after {:.2} s); CPU per event: services {:.1} µs, publisher {:.1} µs",
        figures.published_per_s,
        published.as_secs_f64(),
        figures.fanned_per_s,
        fanned.as_secs_f64(),
        figures.service_cpu_us,
        figures.publisher_cpu_us
    ));
    Ok(figures)
}

/// Publishes `n` events with `Client::publish`, each a task of its own, up to `window` awaiting
/// their confirm (the client has no bulk publish for events); counts each confirm in `confirmed`.
/// One untimed event goes first (the client declares the event topology on its first publish).
/// Returns the time from just before the first timed publish to the last confirm.
async fn publish_lepus(url: &str, n: u64, window: usize, confirmed: &Arc<AtomicU64>) -> anyhow::Result<Duration> {
    let client_options = ClientOptions::default().publish_window(window);
    let client = Client::connect_with(url, client_options).await.context("the Lepus client cannot connect")?;
    client.publish(Happened { seq: n, total_cents: 0 }).await.context("the first event")?;
    let window = Arc::new(Semaphore::new(window));
    let mut sending = JoinSet::new();
    let start = Instant::now();
    for seq in 0..n {
        let permit = Arc::clone(&window).acquire_owned().await?;
        let (client, confirmed) = (client.clone(), Arc::clone(confirmed));
        sending.spawn(async move {
            let id = client.publish(Happened { seq, total_cents: 1999 }).await;
            drop(permit);
            id?;
            confirmed.fetch_add(1, Ordering::Relaxed);
            Ok::<(), lepus::Error>(())
        });
        while let Some(done) = sending.try_join_next() {
            done??;
        }
    }
    while let Some(done) = sending.join_next().await {
        done??;
    }
    let elapsed = start.elapsed();
    client.close().await?;
    Ok(elapsed)
}
