//! How to test your own jobs without RabbitMQ: copy this file beside your worker and adapt it.
//!
//! - `TestWorker` runs jobs through the worker's own execute step: arguments travel as Celery
//!   `args`/`kwargs`, time limits and retry policies apply, failures read as Celery clients would
//!   see them.
//! - `Client::recording()` records what a handler enqueues; `TestWorker::drain` then runs it, and
//!   what that enqueues, in order.
//! - With `#[tokio::test(start_paused = true)]`, delays, retry backoffs and schedules pass on
//!   tokio's virtual clock: a flow spanning hours runs in milliseconds. (This needs tokio's
//!   `test-util` feature in your dev-dependencies.)

use chrono::{TimeZone, Utc};
use lepus::protocol::Arguments;
use lepus::{Client, Job, Request, RetryPolicy};
use lepus_scheduler::{Firing, Schedule};
use lepus_worker::testing::{Run, TestWorker};
use lepus_worker::{JobContext, JobError, State};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// The application under test. ------------------------------------------------------------------

/// Stands for an SMTP client: records what it sends.
#[derive(Clone, Default)]
struct Mailer(Arc<Mutex<Vec<String>>>);

#[derive(Serialize, Deserialize)]
struct PlaceOrder {
    order: u64,
    email: String,
}

impl Job for PlaceOrder {
    const NAME: &'static str = "shop.place_order";
    type Output = u64;
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct SendConfirmation {
    order: u64,
    email: String,
}

impl Job for SendConfirmation {
    const NAME: &'static str = "shop.send_confirmation";
    type Output = ();
}

/// Confirms by email ten minutes after the order (time for the customer to cancel).
async fn place_order(job: PlaceOrder, State(client): State<Client>) -> anyhow::Result<u64> {
    let confirmation = SendConfirmation { order: job.order, email: job.email };
    client.enqueue(Request::new(confirmation).delay(Duration::from_secs(600))).await?;
    Ok(job.order)
}

async fn send_confirmation(job: SendConfirmation, State(mailer): State<Mailer>) -> anyhow::Result<()> {
    let mut sent = mailer.0.lock().map_err(|_| anyhow::anyhow!("the mailer is poisoned"))?;
    sent.push(format!("to {}: order {} confirmed", job.email, job.order));
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct Charge {
    cents: u64,
}

impl Job for Charge {
    const NAME: &'static str = "shop.charge";
    type Output = String;

    fn retry_policy() -> RetryPolicy {
        RetryPolicy::attempts(3).backoff(Duration::from_secs(30), 2.0, Duration::from_secs(600)).jitter(false)
    }
}

/// The payment provider answers "busy" to the first two attempts.
async fn charge(job: Charge, ctx: JobContext) -> Result<String, JobError> {
    if job.cents == 0 {
        return Err(JobError::permanent("nothing to charge").exception("builtins.ValueError"));
    }
    if ctx.attempt() < 3 {
        return Err(JobError::retry("the payment provider is busy"));
    }
    Ok(format!("charged {} cents on attempt {}", job.cents, ctx.attempt()))
}

#[derive(Serialize, Deserialize)]
struct HourlyReport {}

impl Job for HourlyReport {
    const NAME: &'static str = "shop.hourly_report";
    type Output = String;
}

async fn hourly_report(_: HourlyReport, ctx: JobContext) -> Result<String, JobError> {
    Ok(format!("report {}", ctx.id()))
}

fn worker(client: &Client, mailer: &Mailer) -> TestWorker {
    TestWorker::new()
        .state(client.clone())
        .state(mailer.clone())
        .register(place_order)
        .register(send_confirmation)
        .register(charge)
        .register(hourly_report)
}

// The tests. -------------------------------------------------------------------------------------

#[tokio::test]
async fn placing_an_order_enqueues_its_confirmation_for_ten_minutes_later() {
    let (client, mailer) = (Client::recording(), Mailer::default());
    let placed = worker(&client, &mailer).run(PlaceOrder { order: 42, email: "ada@example.com".into() }).await;
    assert_eq!(placed, Run::Succeeded(42));

    let sent = client.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].task(), "shop.send_confirmation");
    let input: SendConfirmation = sent[0].input().expect("a SendConfirmation");
    assert_eq!(input, SendConfirmation { order: 42, email: "ada@example.com".into() });
    let due_in = sent[0].eta().expect("delayed") - Utc::now();
    assert!((595..=600).contains(&due_in.num_seconds()), "due in {due_in}");
    assert!(mailer.0.lock().expect("mailer").is_empty(), "nothing is mailed before it runs");
}

#[tokio::test(start_paused = true)]
async fn the_whole_flow_runs_on_virtual_time() {
    let (client, mailer) = (Client::recording(), Mailer::default());
    let worker = worker(&client, &mailer);
    client.enqueue(PlaceOrder { order: 7, email: "bob@example.com".into() }).await.expect("recorded");

    let ran = worker.drain(&client).await;
    let steps: Vec<(&str, u64)> = ran.iter().map(|run| (run.task.as_str(), run.at.as_secs())).collect();
    assert_eq!(steps, [("shop.place_order", 0), ("shop.send_confirmation", 600)]);
    assert_eq!(*mailer.0.lock().expect("mailer"), ["to bob@example.com: order 7 confirmed"]);
}

#[tokio::test(start_paused = true)]
async fn a_busy_provider_is_retried_by_the_policy_until_the_charge_goes_through() {
    let worker = worker(&Client::recording(), &Mailer::default());
    let started = tokio::time::Instant::now();
    let runs = worker.run_until_done(Charge { cents: 1250 }).await;
    assert!(matches!(runs[0], Run::WillRetry { after, .. } if after == Duration::from_secs(30)), "{runs:?}");
    assert!(matches!(runs[1], Run::WillRetry { after, .. } if after == Duration::from_secs(60)), "{runs:?}");
    assert_eq!(runs[2], Run::Succeeded("charged 1250 cents on attempt 3".to_owned()));
    assert_eq!(started.elapsed(), Duration::from_secs(90), "the backoffs passed on tokio's clock");

    let Run::Failed(refused) = worker.run(Charge { cents: 0 }).await else { panic!("a permanent failure") };
    assert_eq!((refused.exc_module.as_deref(), refused.exc_type.as_str()), (Some("builtins"), "ValueError"));
}

#[tokio::test(start_paused = true)]
async fn a_chain_submitted_through_a_recording_client_is_answered_when_drained() {
    let (client, mailer) = (Client::recording(), Mailer::default());
    let worker = worker(&client, &mailer);
    // Place the order, then confirm at once too: the order id goes first, filling `order`.
    let email = serde_json::json!({ "email": "cy@example.com" }).as_object().cloned().unwrap_or_default();
    let chain =
        Request::new(PlaceOrder { order: 5, email: "cy@example.com".into() })
            .then(Request::partial::<SendConfirmation>(Arguments { args: vec![], kwargs: email }));
    let pending = client.submit(chain).await.expect("recorded");

    let ran = worker.drain(&client).await;
    assert_eq!(ran.len(), 3, "the order, the chained confirmation, the delayed one: {ran:?}");
    pending.await.expect("the chain's last step, answered");
    assert_eq!(mailer.0.lock().expect("mailer").len(), 2);
}

#[tokio::test]
async fn the_hourly_schedule_fires_24_times_a_day_and_each_firing_runs() {
    let schedule = Schedule::new("hourly-report", "@hourly", HourlyReport::NAME).expect("a valid schedule");
    let day = Utc.with_ymd_and_hms(2027, 3, 1, 0, 0, 0).single().expect("a date");
    let ticks = schedule.ticks(day, day + chrono::TimeDelta::days(1), 100);
    assert_eq!(ticks.len(), 24);

    let worker = worker(&Client::recording(), &Mailer::default());
    for tick in ticks {
        let Ok(Firing::Job { message, .. }) = schedule.firing(tick) else { panic!("one job per tick") };
        let report = worker.run_message(message).await.output().expect("the report ran");
        assert_eq!(report, format!("report {}", schedule.firing_id(tick)));
    }
}
