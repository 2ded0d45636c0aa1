//! The two delay cascades: where a delayed message waits in the broker until it is due.
//!
//! - **Lepus's cascade**, through which every delay Lepus sends goes (a delayed enqueue, a
//!   retry, a message that arrived before its `eta`). A delay is counted in ticks of
//!   [`DELAY_TICK`] (1/8 s), rounded up, and written in base 8: one routing-key word per digit,
//!   [`LEVELS`] of them, most significant first, then the destination queue:
//!   `d10.d9.….d1.d0.<queue>`. Level `L` has a quorum queue `lepus.delay.<L>.<d>` for each
//!   digit `d` it can hold, whose messages wait `d × 8^L` ticks and then dead-letter (at least
//!   once) to the topic exchange `lepus.delay.<L>`. That exchange, like the entry exchange
//!   `lepus.delay` where messages are published, sends a message straight to the queue of its
//!   next non-zero digit below, skipping the zeros, or, when none is left, to
//!   `lepus.delay.delivery`, to which every work queue is bound (`*.`×[`LEVELS`] + its name).
//!   A message thus passes through one queue per non-zero digit (1.8 on average for delays
//!   under a minute in whole seconds, 2.6 in ticks) and one exchange per queue, and every queue
//!   holds messages of one wait only, so none blocks another.
//! - **Celery's cascade** (kombu's native delayed delivery, `celery_delayed_27` …
//!   `celery_delayed_0` and `celery_delayed_delivery`): declared with exactly kombu's names and
//!   arguments, and every work queue bound to it, so that delayed jobs Celery clients send reach
//!   Lepus workers. Lepus sends nothing through it: a message passes through an exchange for
//!   every one of its 28 binary digits, each matching a 29-word key, which costs the broker
//!   several times what Lepus's cascade does (see the README's benchmark).
//!
//! Both deliver a message whose queue is gone to `lepus.delayed.unroutable` instead of leaving
//! it to stall its level: Lepus's delivery exchange names it as its alternate exchange, and the
//! broker policy [`UNROUTABLE_DELAYED_POLICY`] does the same for kombu's, which is declared
//! without arguments.

use super::{declare_queue, durable, put_str};
use crate::broker::Broker;
use crate::error::{Error, ReplyCode, Result};
use futures_util::future::try_join_all;
use lapin::options::{ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};
use std::time::Duration;

/// The resolution of Lepus's cascade: a delay is rounded up to a whole number of ticks.
pub const DELAY_TICK: Duration = Duration::from_millis(125);

/// The longest delay either cascade holds: `2^28 − 1` s, about 8.5 years (kombu's limit).
pub const MAX_DELAY: Duration = Duration::from_secs((1 << CELERY_LEVELS) - 1);

/// Levels of Lepus's cascade: base-8 digits of a delay in ticks up to [`MAX_DELAY`].
pub const LEVELS: u32 = 11;

const BASE: u64 = 8;

/// The exchange delayed messages are published to.
pub const DELAY_EXCHANGE: &str = "lepus.delay";

/// The exchange at the bottom of Lepus's cascade, bound to every work queue.
pub const DELAY_DELIVERY_EXCHANGE: &str = "lepus.delay.delivery";

/// Levels of kombu's cascade.
const CELERY_LEVELS: u32 = 28;

/// The exchange at the bottom of kombu's cascade, bound to every work queue.
pub const CELERY_DELIVERY_EXCHANGE: &str = "celery_delayed_delivery";

/// The fanout exchange and quorum queue (the newest [`UNROUTABLE_DELAYED_KEPT`]) that keep
/// delayed messages whose queue is gone. Without it such a message is never dropped by the
/// cascades' at-least-once dead-lettering: it stays in its level, and once a few dozen have piled
/// up that level forwards nothing more, for every queue.
pub const UNROUTABLE_DELAYED: &str = "lepus.delayed.unroutable";

/// How many unroutable delayed messages [`UNROUTABLE_DELAYED`] keeps (the oldest go first).
pub const UNROUTABLE_DELAYED_KEPT: i64 = 10_000;

/// The policy that gives kombu's [`CELERY_DELIVERY_EXCHANGE`] its alternate exchange, as
/// `rabbitmqctl set_policy` takes it: name, pattern, definition. A policy, because kombu declares
/// the exchange without arguments and a declaration with others would be refused.
pub const UNROUTABLE_DELAYED_POLICY: [&str; 3] =
    ["lepus-delayed-unroutable", "^celery_delayed_delivery$", r#"{"alternate-exchange":"lepus.delayed.unroutable"}"#];

/// Where to publish a message so that it reaches `queue` after `delay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayedRoute {
    /// The exchange to publish to: [`DELAY_EXCHANGE`].
    pub exchange: &'static str,
    /// The routing key: the delay's base-8 digits in ticks, then the queue.
    pub routing_key: String,
    /// The delay the cascade applies: `delay` rounded up to whole ticks.
    pub delay: Duration,
}

/// The route through Lepus's cascade that delays a message for `queue` by `delay`, rounded up
/// to a whole tick ([`DELAY_TICK`]); `None` for a delay under a millisecond (publish straight to
/// the queue). Delays beyond [`MAX_DELAY`] are an error.
pub fn delayed_route(queue: &str, delay: Duration) -> Result<Option<DelayedRoute>> {
    if delay < Duration::from_millis(1) {
        return Ok(None);
    }
    if delay > MAX_DELAY {
        return Err(Error::InvalidDelay { delay, max: MAX_DELAY });
    }
    let tick = DELAY_TICK.as_nanos();
    let ticks = u64::try_from(delay.as_nanos().div_ceil(tick)).unwrap_or(u64::MAX);
    let mut key = String::with_capacity(2 * LEVELS as usize + queue.len());
    for level in (0..LEVELS).rev() {
        key.push(char::from(b'0' + digit(ticks, level) as u8));
        key.push('.');
    }
    key.push_str(queue);
    // At most 2^31 ticks: MAX_DELAY is checked above.
    let delay = DELAY_TICK * u32::try_from(ticks).unwrap_or(u32::MAX);
    Ok(Some(DelayedRoute { exchange: DELAY_EXCHANGE, routing_key: key, delay }))
}

fn digit(ticks: u64, level: u32) -> u64 {
    ticks / BASE.pow(level) % BASE
}

/// The queue of Lepus's cascade where messages wait `digit × 8^level` ticks.
#[must_use]
pub fn delay_queue(level: u32, digit: u64) -> String {
    format!("{DELAY_EXCHANGE}.{level}.{digit}")
}

/// The exchange that routes the messages leaving `level` of Lepus's cascade.
fn level_exchange(level: u32) -> String {
    format!("{DELAY_EXCHANGE}.{level}")
}

/// The digits level `level` has a queue for: those a delay up to [`MAX_DELAY`] can have.
fn digits(level: u32) -> impl Iterator<Item = u64> {
    let max_ticks = MAX_DELAY.as_nanos() / DELAY_TICK.as_nanos();
    let weight = u128::from(BASE.pow(level));
    (1..BASE).filter(move |d| u128::from(*d) * weight <= max_ticks)
}

/// Every queue of Lepus's cascade, bottom level first.
pub fn delay_queues() -> impl Iterator<Item = String> {
    (0..LEVELS).flat_map(|level| digits(level).map(move |d| delay_queue(level, d)))
}

/// Declarations sent on a channel before their answers are awaited.
const PIPELINED: usize = 64;

/// Declares both cascades and the queue of unroutable delayed messages. Idempotent. Every
/// exchange and queue first, then every binding, [`PIPELINED`] at a time on `channel`: some 800
/// declarations, which one at a time would take a round trip each, and all at once hold a
/// megabyte or two of futures (seen in a worker's peak memory).
pub async fn declare_delay_cascades(channel: &Channel) -> Result<()> {
    let plan = Plan::of_both();
    for exchanges in plan.exchanges.chunks(PIPELINED) {
        try_join_all(exchanges.iter().map(|e| e.declare(channel))).await?;
    }
    for queues in plan.queues.chunks(PIPELINED) {
        try_join_all(queues.iter().map(|q| q.declare(channel))).await?;
    }
    for bindings in plan.bindings.chunks(PIPELINED) {
        try_join_all(bindings.iter().map(|b| b.declare(channel))).await?;
    }
    Ok(())
}

/// Binds work queue `queue` to the bottom of both cascades: `*.` once per digit, then its name
/// (exactly so many words, so that a queue named `b.c` does not also receive the delayed
/// messages of a queue named `a.b.c`, as kombu's `#.<queue>` would).
pub async fn bind_to_cascades(channel: &Channel, queue: &str) -> Result<()> {
    let lepus = format!("{}{queue}", "*.".repeat(LEVELS as usize));
    let celery = format!("{}{queue}", "*.".repeat(CELERY_LEVELS as usize));
    let bindings = [(DELAY_DELIVERY_EXCHANGE, lepus), (CELERY_DELIVERY_EXCHANGE, celery)]
        .map(|(exchange, key)| Binding { source: exchange.to_owned(), destination: To::Queue(queue.to_owned()), key });
    try_join_all(bindings.iter().map(|b| b.declare(channel))).await?;
    Ok(())
}

/// Binds `queue` to the cascades, which must exist, so that delayed messages reach it (a queue
/// declared by another program, a Celery worker say, may not be bound yet). `false` if there is
/// no such queue: the cascades would take its messages all the same, so `mandatory` cannot tell.
pub async fn bind_delayed_destination(broker: &Broker, queue: &str) -> Result<bool> {
    let channel = broker.channel().await?;
    let bound = match bind_to_cascades(&channel, queue).await {
        Err(e) if e.reply_code() == Some(ReplyCode::NotFound) => Ok(false),
        bound => bound.map(|()| true),
    };
    if channel.status().connected() {
        drop(channel.close(200, "bound".into()).await);
    }
    bound
}

/// Everything both cascades are made of, as data.
#[derive(Debug, Default)]
struct Plan {
    exchanges: Vec<Exchange>,
    queues: Vec<Queue>,
    bindings: Vec<Binding>,
}

#[derive(Debug)]
struct Exchange {
    name: String,
    kind: ExchangeKind,
    arguments: FieldTable,
}

#[derive(Debug)]
struct Queue {
    name: String,
    arguments: FieldTable,
}

#[derive(Debug)]
struct Binding {
    source: String,
    destination: To,
    key: String,
}

#[derive(Debug)]
enum To {
    Queue(String),
    Exchange(String),
}

impl Plan {
    fn of_both() -> Self {
        let mut plan = Self::default();
        plan.unroutable();
        plan.lepus();
        plan.celery();
        plan
    }

    fn topic(&mut self, name: &str, arguments: FieldTable) {
        self.exchanges.push(Exchange { name: name.to_owned(), kind: ExchangeKind::Topic, arguments });
    }

    fn bind(&mut self, destination: To, source: &str, key: String) {
        self.bindings.push(Binding { source: source.to_owned(), destination, key });
    }

    /// A queue of a cascade: messages wait `wait`, then dead-letter, at least once, to `next`.
    fn level_queue(&mut self, name: String, wait: Duration, next: &str) {
        let mut arguments = FieldTable::default();
        put_str(&mut arguments, "x-queue-type", "quorum");
        put_str(&mut arguments, "x-overflow", "reject-publish");
        let millis = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(millis));
        put_str(&mut arguments, "x-dead-letter-exchange", next);
        put_str(&mut arguments, "x-dead-letter-strategy", "at-least-once");
        self.queues.push(Queue { name, arguments });
    }

    fn unroutable(&mut self) {
        let mut kept = FieldTable::default();
        put_str(&mut kept, "x-queue-type", "quorum");
        kept.insert("x-max-length".into(), AMQPValue::LongLongInt(UNROUTABLE_DELAYED_KEPT));
        put_str(&mut kept, "x-overflow", "drop-head");
        self.queues.push(Queue { name: UNROUTABLE_DELAYED.to_owned(), arguments: kept });
        let name = UNROUTABLE_DELAYED.to_owned();
        self.exchanges.push(Exchange { name, kind: ExchangeKind::Fanout, arguments: FieldTable::default() });
        self.bind(To::Queue(UNROUTABLE_DELAYED.to_owned()), UNROUTABLE_DELAYED, String::new());
    }

    /// Lepus's cascade: the delivery exchange, per level a router and the digits' queues, and
    /// the entry exchange.
    fn lepus(&mut self) {
        let mut unroutable = FieldTable::default();
        put_str(&mut unroutable, "alternate-exchange", UNROUTABLE_DELAYED);
        self.topic(DELAY_DELIVERY_EXCHANGE, unroutable);
        for level in 0..LEVELS {
            let exchange = level_exchange(level);
            self.router(&exchange, level);
            for d in digits(level) {
                let wait = DELAY_TICK * u32::try_from(d * BASE.pow(level)).unwrap_or(u32::MAX);
                self.level_queue(delay_queue(level, d), wait, &exchange);
            }
        }
        self.router(DELAY_EXCHANGE, LEVELS);
    }

    /// `exchange` routes messages whose digits from level `below` up are behind them: to the
    /// queue of the highest non-zero digit below `below`, or when all are zero to the delivery
    /// exchange.
    fn router(&mut self, exchange: &str, below: u32) {
        self.topic(exchange, FieldTable::default());
        let done = "*.".repeat((LEVELS - below) as usize);
        for level in 0..below {
            let zeros = "0.".repeat((below - 1 - level) as usize);
            for d in digits(level) {
                self.bind(To::Queue(delay_queue(level, d)), exchange, format!("{done}{zeros}{d}.#"));
            }
        }
        let zeros = "0.".repeat(below as usize);
        self.bind(To::Exchange(DELAY_DELIVERY_EXCHANGE.to_owned()), exchange, format!("{done}{zeros}#"));
    }

    /// kombu's 28 levels and its delivery exchange, with exactly the names and arguments kombu
    /// uses, so that a Celery worker's declaration agrees with ours.
    fn celery(&mut self) {
        self.topic(CELERY_DELIVERY_EXCHANGE, FieldTable::default());
        for level in 0..CELERY_LEVELS {
            let name = celery_level(level);
            self.topic(&name, FieldTable::default());
            let next = if level == 0 { CELERY_DELIVERY_EXCHANGE.to_owned() } else { celery_level(level - 1) };
            self.level_queue(name.clone(), Duration::from_secs(1 << level), &next);
            // Bit `level` set: wait in this level's queue. Not set: go straight to the next level.
            let skip = "*.".repeat((CELERY_LEVELS - 1 - level) as usize);
            self.bind(To::Queue(name.clone()), &name, format!("{skip}1.#"));
            self.bind(To::Exchange(next), &name, format!("{skip}0.#"));
        }
    }
}

impl Exchange {
    async fn declare(&self, channel: &Channel) -> Result<()> {
        let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        channel
            .exchange_declare(self.name.as_str().into(), self.kind.clone(), options, self.arguments.clone())
            .await
            .map_err(Error::amqp("exchange declare"))
    }
}

impl Queue {
    async fn declare(&self, channel: &Channel) -> Result<()> {
        declare_queue(channel, &self.name, durable(), self.arguments.clone()).await
    }
}

impl Binding {
    async fn declare(&self, channel: &Channel) -> Result<()> {
        let (source, key, arguments) = (self.source.as_str().into(), self.key.as_str().into(), FieldTable::default());
        match &self.destination {
            To::Queue(queue) => channel
                .queue_bind(queue.as_str().into(), source, key, QueueBindOptions::default(), arguments)
                .await
                .map_err(Error::amqp("queue bind")),
            To::Exchange(exchange) => channel
                .exchange_bind(exchange.as_str().into(), source, key, ExchangeBindOptions::default(), arguments)
                .await
                .map_err(Error::amqp("exchange bind")),
        }
    }
}

fn celery_level(level: u32) -> String {
    format!("celery_delayed_{level}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(queue: &str, delay: Duration) -> DelayedRoute {
        delayed_route(queue, delay).ok().flatten().expect("a route")
    }

    #[test]
    fn delays_are_written_in_base_eight_ticks_most_significant_first() {
        assert_eq!(delayed_route("q", Duration::ZERO).ok(), Some(None));
        // 5 s = 40 ticks = 0o50.
        let five = route("q", Duration::from_secs(5));
        assert_eq!(five.exchange, "lepus.delay");
        assert_eq!(five.routing_key, format!("{}5.0.q", "0.".repeat(9)));
        assert_eq!(five.delay, Duration::from_secs(5));
        // 1.3 s rounds up to 11 ticks = 0o13 = 1.375 s.
        let rounded_up = route("jobs.high", Duration::from_millis(1300));
        assert_eq!(rounded_up.delay, Duration::from_millis(1375));
        assert!(rounded_up.routing_key.ends_with(".0.1.3.jobs.high"), "{}", rounded_up.routing_key);
        let tiny = route("q", Duration::from_millis(1));
        assert_eq!(tiny.delay, DELAY_TICK);
        assert!(tiny.routing_key.starts_with(&"0.".repeat(10)));
        let longest = route("q", MAX_DELAY);
        assert!(longest.routing_key.starts_with("1."), "the top level holds the longest: {}", longest.routing_key);
        assert_eq!(longest.delay, MAX_DELAY);
        assert!(delayed_route("q", MAX_DELAY + Duration::from_millis(1)).is_err());
    }

    #[test]
    fn every_digit_a_delay_can_have_has_its_queue_and_no_other() {
        let queues: Vec<String> = delay_queues().collect();
        assert_eq!(queues.len(), 71, "7 digits on levels 0 to 9, one on level 10");
        assert!(queues.contains(&"lepus.delay.10.1".to_owned()));
        assert!(!queues.contains(&"lepus.delay.10.2".to_owned()));
        for delay in [Duration::from_millis(125), Duration::from_secs(59), Duration::from_secs(86_400 * 365), MAX_DELAY]
        {
            let key = route("q", delay).routing_key;
            for (position, word) in key.split('.').take(LEVELS as usize).enumerate() {
                let level = LEVELS - 1 - position as u32;
                if word != "0" {
                    assert!(queues.contains(&delay_queue(level, word.parse().expect("a digit"))), "{key}");
                }
            }
        }
    }

    /// Whether topic `pattern` matches routing key `key` (`*` one word, `#` any number).
    fn matches(pattern: &[&str], key: &[&str]) -> bool {
        match (pattern.split_first(), key.split_first()) {
            (None, None) => true,
            (Some((&"#", rest)), _) => matches(rest, key) || (!key.is_empty() && matches(pattern, &key[1..])),
            (Some((word, rest)), Some((first, others))) => (*word == "*" || word == first) && matches(rest, others),
            _ => false,
        }
    }

    /// Follows a message through `plan` from `exchange` as the broker would: the queues it waits
    /// in (and how long), and the exchanges where it leaves the cascade.
    fn travel(plan: &Plan, exchange: &str, key: &str) -> (Vec<String>, Duration, Vec<String>) {
        let words: Vec<&str> = key.split('.').collect();
        let (mut queues, mut waited, mut left) = (Vec::new(), Duration::ZERO, Vec::new());
        let mut at = vec![exchange.to_owned()];
        while let Some(exchange) = at.pop() {
            let routed = plan
                .bindings
                .iter()
                .filter(|b| b.source == exchange && matches(&b.key.split('.').collect::<Vec<_>>(), &words));
            let mut any = false;
            for binding in routed {
                any = true;
                match &binding.destination {
                    To::Exchange(next) => at.push(next.clone()),
                    To::Queue(queue) => {
                        let declared = plan.queues.iter().find(|q| &q.name == queue).expect("a declared queue");
                        let get = |k: &str| declared.arguments.inner().get(k).cloned();
                        let Some(AMQPValue::LongLongInt(ttl)) = get("x-message-ttl") else {
                            panic!("{queue} has no ttl")
                        };
                        let Some(AMQPValue::LongString(next)) = get("x-dead-letter-exchange") else { panic!() };
                        queues.push(queue.clone());
                        waited += Duration::from_millis(u64::try_from(ttl).expect("positive"));
                        at.push(next.to_string());
                    }
                }
            }
            if !any {
                left.push(exchange);
            }
        }
        (queues, waited, left)
    }

    #[test]
    fn a_message_waits_once_per_non_zero_digit_for_exactly_its_delay_then_reaches_delivery() {
        let plan = Plan::of_both();
        for millis in [1, 125, 126, 999, 1000, 4_321, 59_999, 60_000, 3_600_000, 86_400_123, 31_536_000_000] {
            let delay = Duration::from_millis(millis);
            let route = route("jobs.high", delay);
            let (queues, waited, left) = travel(&plan, route.exchange, &route.routing_key);
            assert_eq!(waited, route.delay, "{millis} ms waits its rounded delay");
            assert!(waited >= delay && waited - delay < DELAY_TICK, "{millis} ms");
            let non_zero = route.routing_key.split('.').take(LEVELS as usize).filter(|d| *d != "0").count();
            assert_eq!(queues.len(), non_zero, "{millis} ms: one queue per non-zero digit: {queues:?}");
            assert_eq!(left, [DELAY_DELIVERY_EXCHANGE], "{millis} ms ends at the delivery exchange, once");
        }
    }

    #[test]
    fn kombus_cascade_takes_a_celery_delay_bit_by_bit() {
        let plan = Plan::of_both();
        // 13 s = 0b1101, published by kombu to the level of its highest bit.
        let key = format!("{}1.1.0.1.jobs", "0.".repeat(24));
        let (queues, waited, left) = travel(&plan, "celery_delayed_3", &key);
        assert_eq!(queues, ["celery_delayed_3", "celery_delayed_2", "celery_delayed_0"]);
        assert_eq!(waited, Duration::from_secs(13));
        assert_eq!(left, [CELERY_DELIVERY_EXCHANGE]);
    }

    #[test]
    fn each_queue_waits_its_digits_ticks() {
        let waits: u128 =
            (0..LEVELS).flat_map(|l| digits(l).map(move |d| u128::from(d * BASE.pow(l)))).max().unwrap_or(0);
        assert_eq!(waits * DELAY_TICK.as_millis(), 134_217_728_000, "the longest wait is kombu's longest");
    }
}
