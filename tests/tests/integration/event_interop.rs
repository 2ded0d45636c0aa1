//! Data events between Lepus and Python (kombu), both ways, on the real broker:
//! `tests/python/publish_events.py` (the README's kombu publisher) feeds a Lepus service and an
//! ordered one, `tests/python/subscribe_events.py` (the README's kombu subscriber) reads what a
//! Lepus client publishes and checks it against the README's wire format, and a kombu event with
//! properties only is read from them (without an id: dead-lettered `undecodable`), and the
//! subscriber fails on a malformed event or a timeout, so it checks something. Every test
//! uses its own event name, services and run id, and ignores other runs' events.

use chrono::{DateTime, SecondsFormat, Utc};
use lepus::event::slot_of;
use lepus::internal::topology::{partition_queue, service_queue};
use lepus::{Event, Publish};
use lepus_tests::{
    Heard, Plain, Process, Pythonic, amqp_url, celery_python, connect, consumers_on, publish_all, python_dir,
    queue_names, read_handled, run_python_args, run_service, spawn, subscriber_binary, temp_file, test_service,
    unique_name, wait_until,
};
use lepus_worker::{EventContext, JobError, State, Subscription};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

/// One event a handler got: its body and what its context said.
#[derive(Debug, Clone)]
struct Got {
    body: Value,
    id: String,
    name: String,
    key: Option<String>,
    occurred_at: DateTime<Utc>,
}

#[derive(Clone)]
struct Record {
    run: Arc<str>,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Record {
    fn new(run: &str) -> Self {
        Self { run: run.into(), got: Arc::default() }
    }

    fn push<E: Event>(&self, event: &E, run: &str, ctx: &EventContext) {
        if run == &*self.run {
            let got = Got {
                body: serde_json::to_value(event).expect("JSON"),
                id: ctx.id().to_string(),
                name: ctx.name().to_owned(),
                key: ctx.key().map(str::to_owned),
                occurred_at: ctx.occurred_at(),
            };
            self.got.lock().expect("record").push(got);
        }
    }

    fn all(&self) -> Vec<Got> {
        self.got.lock().expect("record").clone()
    }
}

async fn on_pythonic(event: Pythonic, ctx: EventContext, State(r): State<Record>) -> Result<(), JobError> {
    r.push(&event, &event.run, &ctx);
    Ok(())
}

async fn on_plain(event: Plain, ctx: EventContext, State(r): State<Record>) -> Result<(), JobError> {
    r.push(&event, &event.run, &ctx);
    Ok(())
}

fn text<'a>(value: &'a Value, field: &str) -> Option<&'a str> {
    value.get(field).and_then(Value::as_str)
}

fn millis(at: &str) -> i64 {
    DateTime::parse_from_rfc3339(at).expect("RFC 3339").timestamp_millis()
}

#[tokio::test]
async fn events_a_kombu_publisher_sends_are_handled_once_by_a_service_and_in_key_order_by_an_ordered_one() {
    const EVENTS: usize = 100;
    const PARTITIONS: u16 = 8;
    let run = unique_name("py-publish");
    let (service, _cleanup) = test_service("py-billing", None);
    let record = Record::new(&run);
    let state = record.clone();
    let (stop, running) = run_service(Subscription::service(&service).on(on_pythonic), move |w| w.state(state));
    // The ordered service is `lepus-test-subscriber` in its `python` mode, recording to a file.
    let (ordered, _ordered_cleanup) = test_service("py-ledger", Some(PARTITIONS));
    let out = temp_file("py-ledger");
    let mut command = Command::new(subscriber_binary());
    command
        .env("LEPUS_TEST_SERVICE", &ordered)
        .env("LEPUS_TEST_EVENT", "python")
        .env("LEPUS_TEST_PARTITIONS", PARTITIONS.to_string())
        .env("LEPUS_TEST_OUT", &out)
        .env("RUST_LOG", "warn");
    let mut subscriber = spawn(command, &ordered);

    let client = connect().await;
    let broker = client.broker().clone();
    let mut consumed = vec![service_queue(&service)];
    consumed.extend((0..PARTITIONS).map(|i| partition_queue(&ordered, i)));
    wait_until("both services consume", TIMEOUT, || async {
        for queue in &consumed {
            if consumers_on(&broker, queue).await == 0 {
                return false;
            }
        }
        true
    })
    .await;

    let sent = run_python_args("publish_events.py", &[Pythonic::NAME, &run, &EVENTS.to_string(), "10"]).await;
    assert_eq!(sent.len(), EVENTS, "{sent:?}");
    println!("kombu published {} events, e.g. {}", sent.len(), sent[0]);
    for line in &sent {
        let key = text(line, "key").expect("keyed");
        let python_slot = line.get("slot").and_then(Value::as_u64).expect("a slot");
        assert_eq!(u64::from(slot_of(key)), python_slot, "Python's slot of {key:?} is lepus::event::slot_of's");
    }

    wait_until("the service handled 100", TIMEOUT, || async { record.all().len() >= EVENTS }).await;
    let ours = || read_handled(&out).into_iter().filter(|h| h.run == run).collect::<Vec<_>>();
    wait_until("the ordered service handled 100", TIMEOUT, || async { ours().len() >= EVENTS }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let got = record.all();
    let by_id: HashMap<&str, &Got> = got.iter().map(|g| (g.id.as_str(), g)).collect();
    assert_eq!((got.len(), by_id.len()), (EVENTS, EVENTS), "each event handled once: {got:?}");
    for line in &sent {
        let id = text(line, "id").expect("an id");
        let got = by_id.get(id).unwrap_or_else(|| panic!("event {id} (the Python message_id) handled"));
        let seq = line.get("seq").cloned().expect("a seq");
        let key = text(line, "key").map(str::to_owned);
        assert_eq!(got.body, json!({"run": run, "seq": seq, "key": key, "poison": false}));
        assert_eq!((got.name.as_str(), &got.key), (Pythonic::NAME, &key));
        let sent_at = millis(text(line, "occurred_at").expect("a time"));
        assert_eq!(got.occurred_at.timestamp_millis(), sent_at, "occurred_at to the millisecond Python sent");
    }
    println!("service {service}: {} events handled once each, ids, keys, bodies and times as sent", got.len());

    let handled = ours();
    let ids: HashSet<&str> = handled.iter().map(|h| h.id.as_str()).collect();
    assert_eq!((handled.len(), ids.len()), (EVENTS, EVENTS), "the ordered service handled each once");
    let mut last: HashMap<String, u64> = HashMap::new();
    for h in &handled {
        let key = h.key.clone().expect("keyed");
        if let Some(before) = last.insert(key.clone(), h.seq) {
            assert!(before < h.seq, "{key}: {} after {before}", h.seq);
        }
        let sent_id =
            sent.iter().find(|l| l.get("seq").and_then(Value::as_u64) == Some(h.seq)).and_then(|l| text(l, "id"));
        assert_eq!(sent_id, Some(h.id.as_str()));
    }
    println!("ordered service {ordered}: {} events on {} keys, each key in publish order", handled.len(), last.len());
    assert_eq!(last.len(), 10);

    subscriber.stop(Duration::from_secs(10)).await.expect("stopped");
    drop(stop);
    running.await.expect("joined").expect("stopped cleanly");
}

/// Starts `subscribe_events.py` on its own queue `queue` bound with `pattern`, for `count`
/// events of `run` within `timeout` seconds; returns once it is bound ("ready"), with the rest of
/// its output line by line.
async fn start_python_subscriber(
    queue: &str,
    pattern: &str,
    run: &str,
    count: u64,
    timeout: u64,
) -> (Process, tokio::sync::mpsc::UnboundedReceiver<(String, std::time::Instant)>) {
    let mut command = Command::new(celery_python());
    command
        .arg("subscribe_events.py")
        .args([queue, pattern, run, &count.to_string(), &timeout.to_string()])
        .env("LEPUS_AMQP_URL", amqp_url())
        .current_dir(python_dir());
    let log = std::env::temp_dir().join("lepus-tests").join(format!("{queue}.log"));
    let (process, mut lines) = Process::start_reading_stdout(command, "py-subscriber", log).expect("starts");
    let ready = tokio::time::timeout(TIMEOUT, async {
        while let Some((line, _)) = lines.recv().await {
            if line == "ready" {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "{}", process.log());
    (process, lines)
}

#[tokio::test]
async fn events_a_lepus_client_publishes_reach_a_kombu_subscriber_with_the_documented_headers() {
    const EVENTS: u64 = 100;
    let run = unique_name("py-subscribe");
    let queue = unique_name("py-subscriber");
    let client = connect().await;
    // The first publish declares the events' exchanges, which the subscriber binds passive.
    client.publish(Heard::new("someone else's run", 0, None)).await.expect("published");

    let (mut process, mut lines) = start_python_subscriber(&queue, Heard::NAME, &run, EVENTS, 60).await;

    // Even events keyed (10 keys), odd ones not; each tenth with a time of its own.
    let long_ago = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678Z").expect("a time").with_timezone(&Utc);
    let events: Vec<Publish<Heard>> = (0..EVENTS)
        .map(|seq| {
            let key = (seq % 2 == 0).then(|| format!("key-{}", seq % 20));
            let publish = Publish::new(Heard::new(&run, seq, key));
            if seq % 10 == 0 { publish.occurred_at(long_ago) } else { publish }
        })
        .collect();
    let before = Utc::now();
    let ids = publish_all(&client, events.clone()).await;

    let mut received = Vec::new();
    let reading = async {
        while let Some((line, _)) = lines.recv().await {
            received.push(serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{line}: {e}")));
        }
    };
    tokio::time::timeout(TIMEOUT, reading).await.expect("the subscriber's output ends");
    let status = process.wait_exit(TIMEOUT).await.expect("the subscriber exits");
    assert_eq!(status.code(), Some(0), "{}", process.log());
    println!("kombu received {} events, e.g. {}", received.len(), received[0]);
    assert_eq!(received.len(), ids.len());

    let by_id: HashMap<&str, &Value> =
        received.iter().map(|r| (r["properties"]["message_id"].as_str().expect("a message_id"), r)).collect();
    assert_eq!(by_id.len(), ids.len(), "each event once");
    for (seq, id) in (0..EVENTS).zip(&ids) {
        let got = by_id.get(id.as_str()).unwrap_or_else(|| panic!("event {id} received"));
        let key = (seq % 2 == 0).then(|| format!("key-{}", seq % 20));
        assert_eq!(got["routing_key"], Heard::NAME);
        assert_eq!(got["body"], json!({"run": run, "seq": seq, "key": key, "poison": false}));
        let headers = &got["headers"];
        assert_eq!(headers["x-lepus-event"], Heard::NAME);
        assert_eq!(headers["x-lepus-event-id"], id.as_str());
        assert_eq!(headers.get("x-lepus-key").and_then(Value::as_str), key.as_deref());
        let slot = slot_of(key.as_deref().unwrap_or(id.as_str()));
        assert_eq!(headers["x-lepus-slot"], json!(slot));
        let at = headers["x-lepus-occurred-at"].as_str().expect("a time");
        let at_time = DateTime::parse_from_rfc3339(at).expect("RFC 3339").with_timezone(&Utc);
        assert_eq!(at, at_time.to_rfc3339_opts(SecondsFormat::Millis, true), "milliseconds, UTC (Z)");
        if seq % 10 == 0 {
            assert_eq!(at_time, long_ago);
        } else {
            assert!(at_time >= before - chrono::Duration::milliseconds(1) && at_time <= Utc::now(), "{at}");
        }
        let properties = &got["properties"];
        assert_eq!(properties["type"], Heard::NAME);
        assert_eq!(properties["content_type"], "application/json");
        assert_eq!(properties["delivery_mode"], 2);
        assert_eq!(properties["timestamp"], json!(at_time.timestamp()));
        let only: HashSet<&str> = headers.as_object().expect("a table").keys().map(String::as_str).collect();
        let documented: HashSet<&str> =
            ["x-lepus-event", "x-lepus-event-id", "x-lepus-occurred-at", "x-lepus-key", "x-lepus-slot"].into();
        assert!(only.is_subset(&documented), "only the documented headers: {only:?}");
    }
    assert!(!queue_names().contains(&queue), "the subscriber's queue went with it");
}

#[tokio::test]
async fn the_kombu_subscriber_fails_on_a_malformed_event_and_on_a_timeout() {
    let run = unique_name("py-malformed");
    let client = connect().await;
    client.publish(Heard::new("someone else's run", 0, None)).await.expect("published");
    // A routing key only this run binds; a message with properties only, no Lepus headers.
    let own_key = format!("{}.{run}", Heard::NAME);
    let malformed = unique_name("py-malformed");
    let (mut process, _lines) = start_python_subscriber(&malformed, &own_key, &run, 1, 30).await;
    let publisher = lepus::internal::Publisher::new(client.broker().clone(), Duration::from_secs(10));
    let body = serde_json::to_vec(&Heard::new(&run, 0, None)).expect("JSON");
    let properties = lepus::lapin::BasicProperties::default()
        .with_content_type("application/json".into())
        .with_type(Heard::NAME.into())
        .with_message_id("no-headers-1".into())
        .with_timestamp(1_700_000_000);
    let outgoing =
        lepus::internal::Outgoing { exchange: "lepus.events", routing_key: &own_key, body: &body, properties };
    publisher.publish(outgoing).await.expect("published");
    let status = process.wait_exit(TIMEOUT).await.expect("the subscriber exits");
    let log = process.log();
    println!("malformed: exit {:?}, {}", status.code(), log.trim());
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("malformed event (x-lepus-event is None"), "{log}");

    let timeout = unique_name("py-timeout");
    let (mut process, _lines) = start_python_subscriber(&timeout, &own_key, &run, 1, 2).await;
    let status = process.wait_exit(TIMEOUT).await.expect("the subscriber exits");
    let log = process.log();
    println!("nothing published: exit {:?}, {}", status.code(), log.trim());
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("timed out: 0 of 1 events"), "{log}");
    let left = queue_names();
    assert!(!left.contains(&malformed) && !left.contains(&timeout), "the subscribers' queues went with them");
}

#[tokio::test]
async fn a_kombu_event_with_properties_only_is_handled_and_one_without_a_message_id_is_dead_lettered() {
    let run = unique_name("py-plain");
    let (service, _cleanup) = test_service("py-plain", None);
    // The id-less event goes to a routing key only this run's service binds.
    let own_key = format!("{}.{run}", Plain::NAME);
    let record = Record::new(&run);
    let state = record.clone();
    let subscription = Subscription::service(&service).on(on_plain).pattern(own_key.as_str());
    let (stop, running) = run_service(subscription, move |w| w.state(state));
    // An ordered service routes by the slot header, which these events lack: they go to its
    // partition 0.
    let (ordered, _ordered_cleanup) = test_service("py-plain-ordered", Some(2));
    let ordered_record = Record::new(&run);
    let state = ordered_record.clone();
    let subscription = Subscription::service(&ordered).on(on_plain).ordered(2);
    let (stop_ordered, running_ordered) = run_service(subscription, move |w| w.state(state));
    let client = connect().await;
    let broker = client.broker().clone();
    let queue = service_queue(&service);
    let partitions = [partition_queue(&ordered, 0), partition_queue(&ordered, 1)];
    wait_until("the services consume", TIMEOUT, || async {
        consumers_on(&broker, &queue).await >= 1
            && consumers_on(&broker, &partitions[0]).await >= 1
            && consumers_on(&broker, &partitions[1]).await >= 1
    })
    .await;

    let sent = run_python_args("publish_events.py", &[Plain::NAME, &run, "5", "0", "plain"]).await;
    let nameless = run_python_args("publish_events.py", &[Plain::NAME, &run, "1", "0", "no-id", &own_key]).await;
    println!("kombu published, properties only: {sent:?}; without message_id: {nameless:?}");

    wait_until("5 handled by each service", TIMEOUT, || async {
        record.all().len() >= 5 && ordered_record.all().len() >= 5
    })
    .await;
    let dlq = client.dead_letters(&queue).expect("a queue name");
    wait_until("one dead letter", TIMEOUT, || async { !dlq.list(10).await.expect("listed").is_empty() }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let got = record.all();
    assert_eq!(got.len(), 5, "{got:?}");
    for line in &sent {
        let id = text(line, "id").expect("an id");
        let got = got.iter().find(|g| g.id == id).unwrap_or_else(|| panic!("event {id} handled, id from message_id"));
        assert_eq!(got.name, Plain::NAME, "the name from the type property");
        assert_eq!(got.key, None);
        let timestamp = line.get("timestamp").and_then(Value::as_i64).expect("a timestamp");
        assert_eq!(got.occurred_at.timestamp(), timestamp, "the time from the timestamp property");
        assert_eq!(got.body, json!({"run": run, "seq": line["seq"], "key": null, "poison": false}));
    }
    let letters = dlq.list(10).await.expect("listed");
    println!("dead letters: {letters:?}");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, "undecodable");
    assert!(letters[0].error.as_deref().is_some_and(|e| e.contains("message_id")), "{letters:?}");
    let ordered_got = ordered_record.all();
    println!("the ordered service got {} of them (no x-lepus-slot header: partition 0)", ordered_got.len());
    let mut ordered_ids: Vec<&str> = ordered_got.iter().map(|g| g.id.as_str()).collect();
    ordered_ids.sort_unstable();
    ordered_ids.dedup();
    assert_eq!(ordered_ids.len(), 5, "each slotless event handled once by the ordered service: {ordered_got:?}");
    drop((stop, stop_ordered));
    running.await.expect("joined").expect("stopped cleanly");
    running_ordered.await.expect("joined").expect("stopped cleanly");
}

/// The code between `# --- README: <what>` and `# --- README: end` in `script`.
fn readme_part(script: &str) -> String {
    let text = std::fs::read_to_string(python_dir().join(script)).expect("the script");
    let start = text.find("# --- README:").expect("a README part");
    let body = &text[start..];
    let body = &body[body.find('\n').expect("a line") + 1..body.find("# --- README: end").expect("an end")];
    body.to_owned()
}

#[test]
fn the_readme_kombu_snippets_are_the_tested_scripts() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).expect("README");
    for script in ["publish_events.py", "subscribe_events.py"] {
        let part = readme_part(script);
        assert!(part.lines().count() > 10, "{script}: {part}");
        assert!(readme.contains(&part), "the README's snippet differs from tests/python/{script}'s part:\n{part}");
    }
}
