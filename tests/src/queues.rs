//! Uniquely named work queues that delete themselves (and their dead-letter queue) when dropped,
//! and the broker-side observations tests assert on: ready, unacked and consumer counts.

use lepus::internal::{Outgoing, Publisher};
use lepus::lapin::BasicProperties;
use lepus::lapin::message::Delivery;
use lepus::lapin::options::{
    BasicAckOptions, BasicGetOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lepus::lapin::types::FieldTable;
use lepus::protocol::TaskMessage;
use lepus::{Broker, Client, ClientOptions, WorkQueue};
use std::future::Future;
use std::process::Command;
use std::time::{Duration, Instant};

/// The broker the tests use: `LEPUS_AMQP_URL`, default the local RabbitMQ.
#[must_use]
pub fn amqp_url() -> String {
    std::env::var("LEPUS_AMQP_URL").unwrap_or_else(|_| lepus::DEFAULT_AMQP_URL.to_owned())
}

/// `t-<what>-<random>`: a name no other test (or test run) uses.
#[must_use]
pub fn unique_name(what: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("t-{what}-{}", &random[..12])
}

/// A header's value as a whole number, whatever integer type the sender used.
#[must_use]
pub fn header_u64(headers: &FieldTable, name: &str) -> Option<u64> {
    use lepus::lapin::types::AMQPValue;
    match headers.inner().get(name)? {
        AMQPValue::LongLongInt(i) => u64::try_from(*i).ok(),
        AMQPValue::LongInt(i) => u64::try_from(*i).ok(),
        AMQPValue::LongUInt(i) => Some(u64::from(*i)),
        AMQPValue::ShortInt(i) => u64::try_from(*i).ok(),
        AMQPValue::ShortShortUInt(i) => Some(u64::from(*i)),
        _ => None,
    }
}

/// A path for a file in the temporary directory, unique to this call.
#[must_use]
pub fn temp_file(what: &str) -> String {
    let dir = std::env::temp_dir().join("lepus-tests");
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir.join(unique_name(what)).to_string_lossy().into_owned()
}

/// A client on the test broker. Its reply queue expires a minute after the client is gone, even
/// if a failing test never closes it.
pub async fn connect() -> Client {
    let options = ClientOptions::default().reply_queue_expires(Duration::from_secs(60));
    Client::connect_with(&amqp_url(), options).await.expect("the test broker is reachable")
}

/// Runs `rabbitmqctl` and returns its standard output; panics with its error output on failure.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl").args(args).output().expect("rabbitmqctl runs");
    assert!(output.status.success(), "rabbitmqctl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The names of the queues on the broker now (`rabbitmqctl list_queues name`).
#[must_use]
pub fn queue_names() -> std::collections::BTreeSet<String> {
    rabbitmqctl(&["list_queues", "-q", "--no-table-headers", "name"]).lines().map(str::to_owned).collect()
}

/// Closes (from the broker side) every connection whose client-given name is `name`, as a
/// network cut would; returns how many were closed.
#[must_use]
pub fn cut_connections(name: &str) -> usize {
    let listing = rabbitmqctl(&["list_connections", "-q", "--no-table-headers", "pid", "client_properties"]);
    let wanted = format!("{{\"connection_name\",\"{name}\"}}");
    let pids: Vec<&str> =
        listing.lines().filter(|line| line.contains(&wanted)).filter_map(|line| line.split('\t').next()).collect();
    for pid in &pids {
        rabbitmqctl(&["close_connection", pid, "cut by a Lepus test"]);
    }
    pids.len()
}

/// The consumers of `queue` as the broker lists them (`<channel pid> <consumer tag>`), sorted: the
/// same list later means nobody re-subscribed (a channel error or a reconnect would show as a new
/// channel and tag).
#[must_use]
pub fn consumers_of(queue: &str) -> Vec<String> {
    let listing =
        rabbitmqctl(&["list_consumers", "-q", "--no-table-headers", "queue_name", "channel_pid", "consumer_tag"]);
    let mut consumers: Vec<String> = listing
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(name, _)| *name == queue)
        .map(|(_, consumer)| consumer.replace('\t', " "))
        .collect();
    consumers.sort();
    consumers
}

/// Polls `check` every 50 ms until it holds; panics after `timeout`, naming `what`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A declared work queue with a unique name; dropping it deletes it, its dead-letter queue and
/// the exchange of the same name a Celery app may have bound it to.
#[derive(Debug)]
pub struct TestQueue {
    queue: WorkQueue,
    broker: Broker,
    publisher: Publisher,
}

impl TestQueue {
    /// Declares `t-<what>-<random>` (and its `.dlq`) as a worker would.
    pub async fn declare(what: &str) -> Self {
        Self::declare_with(WorkQueue::new(unique_name(what)).expect("valid name")).await
    }

    /// Declares the given work queue.
    pub async fn declare_with(queue: WorkQueue) -> Self {
        let broker = Broker::connect(&amqp_url(), "lepus-tests").await.expect("the test broker is reachable");
        let channel = broker.channel().await.expect("channel");
        queue.declare(&channel).await.expect("queue declared");
        let publisher = Publisher::new(broker.clone(), Duration::from_secs(10));
        Self { queue, broker, publisher }
    }

    /// The queue's name.
    #[must_use]
    pub fn name(&self) -> &str {
        self.queue.name()
    }

    /// Its dead-letter queue's name.
    #[must_use]
    pub fn dead_letter_queue(&self) -> String {
        self.queue.dead_letter_queue()
    }

    /// The connection pool the queue was declared on.
    #[must_use]
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Publishes a task message to the work queue and waits for the broker's confirm.
    pub async fn publish(&self, message: &TaskMessage) {
        let (body, properties) = message.encode().expect("message encodes");
        self.publish_raw(&body, properties).await;
    }

    /// Publishes any bytes to the work queue, as a misbehaving client might.
    pub async fn publish_raw(&self, body: &[u8], properties: BasicProperties) {
        let outgoing = Outgoing { exchange: "", routing_key: self.name(), body, properties };
        self.publisher.publish(outgoing).await.expect("published and confirmed");
    }

    /// Messages ready for delivery in `queue` (not counting unacked ones).
    pub async fn ready_in(&self, queue: &str) -> u32 {
        self.passive(queue).await.message_count()
    }

    /// Messages ready in the work queue.
    pub async fn ready(&self) -> u32 {
        self.ready_in(self.name()).await
    }

    /// Consumers attached to the work queue.
    pub async fn consumers(&self) -> u32 {
        self.passive(self.name()).await.consumer_count()
    }

    /// Waits until `n` consumers are attached (workers are up and consuming).
    pub async fn wait_for_consumers(&self, n: u32) {
        wait_until(&format!("{n} consumer(s) on {}", self.name()), Duration::from_secs(30), || async {
            self.consumers().await >= n
        })
        .await;
    }

    /// Messages delivered to consumers and not yet acked, as `rabbitmqctl` reports them. For
    /// quorum queues the broker refreshes this figure only every few seconds (its metrics tick),
    /// so poll it, and prefer [`TestQueue::ready`] where it tells enough.
    #[must_use]
    pub fn unacked(&self) -> u64 {
        let listing = rabbitmqctl(&["list_queues", "-q", "--no-table-headers", "name", "messages_unacknowledged"]);
        listing
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .find(|(name, _)| *name == self.name())
            .and_then(|(_, count)| count.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Takes (and acks) every message in `queue`.
    pub async fn take_all(&self, queue: &str) -> Vec<Delivery> {
        let channel = self.broker.channel().await.expect("channel");
        let mut taken = Vec::new();
        while let Some(message) =
            channel.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await.expect("basic.get")
        {
            message.delivery.acker.ack(BasicAckOptions::default()).await.expect("ack");
            taken.push(message.delivery);
        }
        taken
    }

    async fn passive(&self, queue: &str) -> lepus::lapin::Queue {
        let channel = self.broker.channel().await.expect("channel");
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let declared = channel.queue_declare(queue.into(), options, FieldTable::default()).await;
        drop(channel.close(200, "ok".into()).await);
        declared.unwrap_or_else(|e| panic!("queue {queue} does not exist: {e}"))
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        // Celery apps bind their queues to a direct exchange of the same name: delete it too.
        let name = self.queue.name().to_owned();
        delete_now(&[name.clone(), self.queue.dead_letter_queue()], &[name]);
    }
}

/// Queues (and exchanges) a test made besides its work queue (schedule state, a service's
/// queues); they are deleted when this is dropped, whether the test passed or not.
#[derive(Debug, Default)]
pub struct Cleanup {
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl Cleanup {
    /// Deletes `queue` at the end of the test.
    pub fn queue(&mut self, queue: String) {
        self.queues.push(queue);
    }

    /// Deletes `exchange` at the end of the test.
    pub fn exchange(&mut self, exchange: String) {
        self.exchanges.push(exchange);
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        delete_now(&self.queues, &self.exchanges);
    }
}

/// Deletes queues and exchanges at once, on a fresh connection and a runtime of its own: the
/// test's runtime may be single-threaded and is blocked while this runs.
fn delete_now(queues: &[String], exchanges: &[String]) {
    let (queues, exchanges) = (queues.to_vec(), exchanges.to_vec());
    let deleting = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        runtime.block_on(async move {
            let Ok(broker) = Broker::connect(&amqp_url(), "lepus-tests-cleanup").await else { return };
            let Ok(channel) = broker.channel().await else { return };
            for name in &queues {
                drop(channel.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await);
            }
            for name in &exchanges {
                drop(channel.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default()).await);
            }
        });
    });
    drop(deleting.join());
}
