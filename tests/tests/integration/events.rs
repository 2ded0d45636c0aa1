//! Data events between services on the real broker: fan-out to every subscribed service once
//! each, nothing lost while a service is down, per-key order with several processes, poison
//! events dead-lettered for one service alone, unrouted events kept, bad input dead-lettered
//! (Python on both ends: `event_interop.rs`). The stream and the `lepus.events*` exchanges are shared by
//! the whole broker: every test uses its own event name, services and run id, and ignores the
//! rest.

use lepus::internal::topology::{EVENT_LOG_STREAM, UNROUTED_EVENTS, service_queue};
use lepus::lapin::BasicProperties;
use lepus::lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lepus::lapin::types::{AMQPValue, FieldTable};
use lepus::{Broker, Envelope, Event, EventId, Publish};
use lepus_tests::{
    Checked, Fanned, Poisoned, Sequenced, Waited, connect, consumers_on, publish_all, read_handled, run_service, spawn,
    subscriber_binary, temp_file, test_service, unique_name, wait_until,
};
use lepus_worker::{EventContext, JobError, Seen, State, Subscription};
use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one service saw: every delivery, the duplicates its `Seen` caught, and the events it
/// handled (after deduplication), by seq.
#[derive(Debug, Default)]
struct Tally {
    raw: AtomicU64,
    duplicates: AtomicU64,
    handled: Mutex<HashMap<u64, u32>>,
    seen: Option<Seen>,
}

#[derive(Clone)]
struct Run(Arc<str>);

async fn count_fanned(
    event: Fanned,
    ctx: EventContext,
    State(t): State<Arc<Tally>>,
    State(run): State<Run>,
) -> Result<(), JobError> {
    if event.run != *run.0 {
        return Ok(());
    }
    t.raw.fetch_add(1, Ordering::Relaxed);
    if !t.seen.as_ref().expect("a window").first_time(ctx.id()) {
        t.duplicates.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    *t.handled.lock().expect("tally").entry(event.seq).or_default() += 1;
    Ok(())
}

#[tokio::test]
async fn three_services_each_handle_each_of_10000_events_once() {
    const EVENTS: u64 = 10_000;
    let run = unique_name("fanout");
    let mut services = Vec::new();
    for what in ["fan-billing", "fan-mail", "fan-stock"] {
        let (name, cleanup) = test_service(what, None);
        let tally = Arc::new(Tally { seen: Some(Seen::new(Duration::from_secs(600))), ..Tally::default() });
        let state = (Arc::clone(&tally), Run(run.as_str().into()));
        let (stop, running) =
            run_service(Subscription::service(&name).on(count_fanned), move |w| w.state(state.0).state(state.1));
        services.push((name, cleanup, tally, stop, running));
    }
    let client = connect().await;
    let broker = client.broker().clone();
    for (name, ..) in &services {
        let queue = service_queue(name);
        wait_until(&format!("{queue} consumed"), Duration::from_secs(30), || async {
            consumers_on(&broker, &queue).await >= 1
        })
        .await;
    }

    let events = (0..EVENTS).map(|seq| Publish::new(Fanned::new(&run, seq, None))).collect();
    let ids = publish_all(&client, events).await;
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 10_000, "every event has its own id");

    for (name, _, tally, ..) in &services {
        wait_until(&format!("{name} handled 10,000 events"), Duration::from_secs(60), || async {
            tally.handled.lock().expect("tally").len() as u64 == EVENTS
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (name, _, tally, stop, running) in services {
        let handled = tally.handled.lock().expect("tally").clone();
        let (raw, duplicates) = (tally.raw.load(Ordering::Relaxed), tally.duplicates.load(Ordering::Relaxed));
        println!("service {name}: {raw} raw deliveries, {duplicates} duplicates, {} handled", handled.len());
        assert_eq!(handled.len(), 10_000, "{name}");
        assert!(handled.values().all(|times| *times == 1), "{name}: each event handled once after deduplication");
        assert_eq!(raw, 10_000 + duplicates, "{name}");
        drop(stop);
        running.await.expect("joined").expect("the worker stopped cleanly");
    }
}

#[tokio::test]
async fn an_event_nobody_subscribes_to_is_confirmed_and_kept_in_the_unrouted_queue_and_the_stream() {
    let client = connect().await;
    let name = format!("test.unrouted.{}", uuid::Uuid::new_v4().simple());
    let envelope = Envelope::new(name.as_str(), serde_json::json!({"nobody": "listens"}), None, chrono::Utc::now());
    client.publish_envelope(&envelope).await.expect("an event nobody subscribes to is not an error");

    let broker = client.broker();
    let in_unrouted = take_from_unrouted(broker, &envelope.id).await;
    assert_eq!(in_unrouted.as_ref().map(|e| e.name.as_str()), Some(name.as_str()), "kept in {UNROUTED_EVENTS}");
    let in_stream = find_in_stream(broker, &envelope.id).await.expect("appended to the stream");
    let millis = |e: &Envelope| e.occurred_at.timestamp_millis();
    assert_eq!(
        (&in_stream.name, &in_stream.body, in_stream.slot, millis(&in_stream)),
        (&envelope.name, &envelope.body, envelope.slot, millis(&envelope)),
        "{EVENT_LOG_STREAM} holds the event as it was sent (its time to the millisecond)"
    );
}

/// Takes event `id` out of the shared unrouted queue, handing every other message back.
async fn take_from_unrouted(broker: &Broker, id: &EventId) -> Option<Envelope> {
    use futures_lite::StreamExt;
    // The queue is broker-wide and may hold up to 10,000 other tests' events, ours among the
    // newest: read them through a consumer (basic.get one by one takes a minute), take ours, and
    // give the others back.
    let channel = broker.channel().await.expect("channel");
    // More than the queue keeps, so that none waits for an ack.
    channel.basic_qos(12_000, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = channel
        .basic_consume(UNROUTED_EVENTS.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consumer");
    let mut found = None;
    let mut last = None;
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await {
        let envelope = Envelope::decode(&delivery.properties, &delivery.data).ok();
        if envelope.as_ref().is_some_and(|e| e.id == *id) {
            delivery.acker.ack(BasicAckOptions::default()).await.expect("ack");
            found = envelope;
            break;
        }
        last = Some(delivery.delivery_tag);
    }
    if let Some(tag) = last {
        channel.basic_nack(tag, BasicNackOptions { multiple: true, requeue: true }).await.expect("nack");
    }
    drop(channel.close(200, "done".into()).await);
    found
}

/// Reads the event stream from a few seconds ago until event `id` turns up (or 30 s pass).
async fn find_in_stream(broker: &Broker, id: &EventId) -> Option<Envelope> {
    use futures_lite::StreamExt;
    let channel = broker.channel().await.expect("channel");
    channel.basic_qos(2000, BasicQosOptions::default()).await.expect("qos");
    let mut args = FieldTable::default();
    // Other tests append to the stream too, tens of thousands of events a minute: start a few
    // seconds before ours (a timestamp offset starts at the chunk holding it).
    let from = chrono::Utc::now().timestamp() - 5;
    args.insert("x-stream-offset".into(), AMQPValue::Timestamp(u64::try_from(from).expect("after 1970")));
    let mut consumer = channel
        .basic_consume(EVENT_LOG_STREAM.into(), "".into(), BasicConsumeOptions::default(), args)
        .await
        .expect("stream consumer");
    let reading = async {
        while let Some(Ok(delivery)) = consumer.next().await {
            delivery.acker.ack(BasicAckOptions { multiple: true }).await.expect("ack");
            if let Ok(envelope) = Envelope::decode(&delivery.properties, &delivery.data)
                && envelope.id == *id
            {
                return Some(envelope);
            }
        }
        None
    };
    let found = tokio::time::timeout(Duration::from_secs(30), reading).await.ok().flatten();
    drop(channel.close(200, "done".into()).await);
    found
}

async fn refuse_poison(event: Poisoned, State(t): State<Arc<Tally>>) -> Result<(), JobError> {
    t.raw.fetch_add(1, Ordering::Relaxed);
    if event.poison {
        return Err(JobError::new(format!("event {} is poison to this service", event.seq)));
    }
    *t.handled.lock().expect("tally").entry(event.seq).or_default() += 1;
    Ok(())
}

async fn take_poison(event: Poisoned, State(t): State<Arc<Tally>>) -> Result<(), JobError> {
    t.raw.fetch_add(1, Ordering::Relaxed);
    *t.handled.lock().expect("tally").entry(event.seq).or_default() += 1;
    Ok(())
}

#[tokio::test]
async fn a_poison_event_is_dead_lettered_for_one_service_and_handled_by_the_others() {
    let run = unique_name("poison");
    let fast =
        lepus::RetryPolicy::attempts(3).backoff(Duration::from_secs(1), 1.0, Duration::from_secs(1)).jitter(false);
    let mut services = Vec::new();
    for (what, picky) in [("poison-picky", true), ("poison-a", false), ("poison-b", false)] {
        let (name, cleanup) = test_service(what, None);
        let tally = Arc::new(Tally::default());
        let subscription = Subscription::service(&name).retry(fast);
        let subscription = if picky { subscription.on(refuse_poison) } else { subscription.on(take_poison) };
        let state = Arc::clone(&tally);
        let (stop, running) = run_service(subscription, move |w| w.state(state));
        services.push((name, cleanup, tally, stop, running));
    }
    let client = connect().await;
    let broker = client.broker().clone();
    for (name, ..) in &services {
        let queue = service_queue(name);
        wait_until(&format!("{queue} consumed"), Duration::from_secs(30), || async {
            consumers_on(&broker, &queue).await >= 1
        })
        .await;
    }
    let poison = Poisoned { poison: true, ..Poisoned::new(&run, 1, Some("order-1".into())) };
    let poison_id = client.publish(poison).await.expect("published");
    client.publish(Poisoned::new(&run, 2, None)).await.expect("published");

    let picky_dlq = client.dead_letters(&service_queue(&services[0].0)).expect("a queue name");
    wait_until("the poison event is dead-lettered", Duration::from_secs(30), || async {
        picky_dlq.list(10).await.expect("listed").len() == 1
    })
    .await;
    let letters = picky_dlq.list(10).await.expect("listed");
    println!("dead letter: {:?}", letters[0]);
    assert_eq!(letters[0].reason, "failed");
    assert_eq!(letters[0].attempts, Some(3), "retried by the subscription's policy, then given up");
    assert_eq!(letters[0].id.as_ref().map(|id| id.as_str()), Some(poison_id.as_str()));
    assert_eq!(letters[0].task.as_deref(), Some(Poisoned::NAME));
    assert!(letters[0].error.as_deref().is_some_and(|e| e.contains("poison to this service")), "{letters:?}");

    for (name, _, tally, ..) in &services[1..] {
        wait_until(&format!("{name} handled both"), Duration::from_secs(30), || async {
            tally.handled.lock().expect("tally").len() == 2
        })
        .await;
        let dlq = client.dead_letters(&service_queue(name)).expect("a queue name");
        assert_eq!(dlq.list(10).await.expect("listed").len(), 0, "{name} dead-lettered nothing");
    }
    let picky = &services[0].2;
    assert_eq!(picky.handled.lock().expect("tally").keys().copied().collect::<Vec<_>>(), [2], "the next event went on");
    assert_eq!(picky.raw.load(Ordering::Relaxed), 4, "3 attempts at the poison event, 1 at the other");
    for (_, _, _, stop, running) in services {
        drop(stop);
        running.await.expect("joined").expect("stopped");
    }
}

async fn take_checked(_event: Checked) -> Result<(), JobError> {
    Ok(())
}

#[tokio::test]
async fn undecodable_and_unknown_events_on_a_service_queue_are_dead_lettered_with_a_reason() {
    let (name, _cleanup) = test_service("bad-input", None);
    // `test.bad.#` brings events no handler takes.
    let subscription = Subscription::service(&name).on(take_checked).pattern("test.bad.#");
    let (stop, running) = run_service(subscription, |w| w);
    let client = connect().await;
    let broker = client.broker().clone();
    let queue = service_queue(&name);
    wait_until("consumed", Duration::from_secs(30), || async { consumers_on(&broker, &queue).await >= 1 }).await;

    let unknown = Envelope::new("test.bad.unheard-of", serde_json::json!({}), None, chrono::Utc::now());
    client.publish_envelope(&unknown).await.expect("published");
    let publisher = lepus::internal::Publisher::new(broker.clone(), Duration::from_secs(10));
    let mut headers = FieldTable::default();
    lepus::internal::set_header(&mut headers, "x-lepus-event", Checked::NAME);
    lepus::internal::set_header(&mut headers, "x-lepus-event-id", "not-json-1");
    let properties = BasicProperties::default().with_headers(headers).with_timestamp(1_700_000_000);
    let outgoing = lepus::internal::Outgoing { exchange: "", routing_key: &queue, body: b"{not json", properties };
    publisher.publish(outgoing).await.expect("published");
    let wrong_shape = Publish::new(Checked::new("x", 1, None));
    let mut envelope = wrong_shape.into_envelope(chrono::Utc::now()).expect("an envelope");
    envelope.body = serde_json::json!({"seq": "not a number"});
    client.publish_envelope(&envelope).await.expect("published");

    let dlq = client.dead_letters(&queue).expect("a queue name");
    wait_until("three dead letters", Duration::from_secs(30), || async {
        dlq.list(10).await.expect("listed").len() == 3
    })
    .await;
    let letters = dlq.list(10).await.expect("listed");
    let reasons: HashMap<String, String> = letters
        .iter()
        .map(|l| (l.id.as_ref().map(|id| id.to_string()).unwrap_or_default(), l.reason.clone()))
        .collect();
    println!("dead letters: {letters:?}");
    assert_eq!(reasons.get(unknown.id.as_str()).map(String::as_str), Some("unknown-event"));
    assert_eq!(reasons.get("not-json-1").map(String::as_str), Some("undecodable"));
    assert_eq!(reasons.get(envelope.id.as_str()).map(String::as_str), Some("bad-input"));
    drop(stop);
    running.await.expect("joined").expect("stopped");
}

/// The queue of each consumer on the broker (one line per consumer, waiting ones included).
fn rabbitmq_consumers() -> Vec<String> {
    lepus_tests::rabbitmqctl(&["list_consumers", "-q", "--no-table-headers", "queue_name"])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Starts `lepus-test-subscriber` for `service`, handling `event` (`downtime`, `order`,
/// `python`), ordered in `partitions` if given, appending what it handles to `out`.
fn start_subscriber(service: &str, event: &str, partitions: Option<u16>, out: &str) -> lepus_tests::Process {
    let mut command = Command::new(subscriber_binary());
    command
        .env("LEPUS_TEST_SERVICE", service)
        .env("LEPUS_TEST_EVENT", event)
        .env("LEPUS_TEST_OUT", out)
        .env("RUST_LOG", "warn");
    if let Some(partitions) = partitions {
        command.env("LEPUS_TEST_PARTITIONS", partitions.to_string());
    }
    spawn(command, service)
}

#[tokio::test]
async fn events_published_while_a_service_is_down_wait_for_it_and_none_is_lost() {
    const EVENTS: u64 = 2_000;
    let run = unique_name("downtime");
    let (service, _cleanup) = test_service("downtime", None);
    let queue = service_queue(&service);
    let client = connect().await;
    let broker = client.broker().clone();
    let before = temp_file("downtime-before");
    let mut first = start_subscriber(&service, "downtime", None, &before);
    wait_until("the service consumes", Duration::from_secs(30), || async { consumers_on(&broker, &queue).await == 1 })
        .await;
    first.stop(Duration::from_secs(10)).await.expect("stopped");
    wait_until("no process of the service runs", Duration::from_secs(10), || async {
        consumers_on(&broker, &queue).await == 0
    })
    .await;

    let events = (0..EVENTS).map(|seq| Publish::new(Waited::new(&run, seq, None))).collect();
    publish_all(&client, events).await;
    let waiting = lepus::internal::topology::inspect_queue(&broker, &queue).await.expect("inspected").expect("a queue");
    println!("{} events wait in {queue} while the service is down", waiting.messages);
    assert!(waiting.messages >= 2_000, "{waiting:?}");

    let after = temp_file("downtime-after");
    let _second = start_subscriber(&service, "downtime", None, &after);
    let ours = || read_handled(&after).into_iter().filter(|h| h.run == run).map(|h| h.seq).collect::<HashSet<u64>>();
    wait_until("the restarted service handled all 2,000", Duration::from_secs(60), || async { ours().len() == 2_000 })
        .await;
    let handled_before = read_handled(&before).iter().filter(|h| h.run == run).count();
    println!("handled after the restart: {} of {EVENTS}; before it: {handled_before}; lost: 0", ours().len());
    assert_eq!(handled_before, 0);
    assert_eq!(ours(), (0..EVENTS).collect::<HashSet<u64>>(), "0 lost");
}

#[tokio::test]
async fn events_of_a_key_are_handled_in_publish_order_with_two_processes_per_service() {
    const KEYS: u64 = 100;
    const PER_KEY: u64 = 100;
    const PARTITIONS: u16 = 8;
    let run = unique_name("order");
    let client = connect().await;
    let broker = client.broker().clone();
    let mut services = Vec::new();
    for what in ["order-ledger", "order-search"] {
        let (service, cleanup) = test_service(what, Some(PARTITIONS));
        let out = temp_file(what);
        let processes: Vec<_> = (0..2).map(|_| start_subscriber(&service, "order", Some(PARTITIONS), &out)).collect();
        services.push((service, cleanup, out, processes));
    }
    // A passive declare counts only a single-active-consumer queue's active consumer: ask
    // rabbitmqctl, which lists the waiting ones too.
    let partitions: Vec<String> = services
        .iter()
        .flat_map(|(service, ..)| (0..PARTITIONS).map(|i| lepus::internal::topology::partition_queue(service, i)))
        .collect();
    wait_until("both processes of each service on each partition", Duration::from_secs(30), || async {
        let listing = rabbitmq_consumers();
        partitions.iter().all(|queue| listing.iter().filter(|q| *q == queue).count() == 2)
    })
    .await;
    drop(broker);

    // Each key's events one after the other (each confirmed before the next), the keys at once.
    let mut publishing = tokio::task::JoinSet::new();
    for key in 0..KEYS {
        let (client, run) = (client.clone(), run.clone());
        publishing.spawn(async move {
            for n in 0..PER_KEY {
                let event = Sequenced::new(&run, key * PER_KEY + n, Some(format!("key-{key}")));
                client.publish(event).await.expect("published");
            }
        });
    }
    while let Some(published) = publishing.join_next().await {
        published.expect("joined");
    }

    for (service, _, out, _) in &services {
        let ours = || read_handled(out).into_iter().filter(|h| h.run == run).collect::<Vec<_>>();
        wait_until(&format!("{service} handled 10,000"), Duration::from_secs(90), || async {
            ours().iter().map(|h| h.seq).collect::<HashSet<_>>().len() == 10_000
        })
        .await;
        let handled = ours();
        let mut last: HashMap<String, u64> = HashMap::new();
        let mut out_of_order = 0;
        for h in &handled {
            let key = h.key.clone().expect("keyed");
            if let Some(before) = last.insert(key, h.seq)
                && before >= h.seq
            {
                out_of_order += 1;
            }
        }
        println!(
            "service {service}: {} handlings of 10,000 events on {} keys, {out_of_order} out of order",
            handled.len(),
            last.len()
        );
        assert_eq!(last.len(), 100);
        assert_eq!(out_of_order, 0, "{service}: per key, strictly increasing");
    }
}
