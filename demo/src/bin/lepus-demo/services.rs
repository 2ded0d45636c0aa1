//! The events demo's order events and its three services, as the README shows them:
//!
//! - billing: `orders.*` (every order event, one word after `orders.`), unordered;
//! - shipping: `orders.paid`, ordered by key (the order id) over 4 partitions;
//! - analytics: `orders.#` (every order event, any words after `orders.`), unordered.
//!
//! Each service runs in a worker of its own in this process and writes down every event it
//! handles in its [`Tally`], printing the first few.

use crate::console::outln;
use lepus_worker::{EventContext, State, Subscription};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// An order was created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OrderCreated {
    pub(crate) order: u64,
    pub(crate) total_cents: u64,
}

impl lepus::Event for OrderCreated {
    const NAME: &'static str = "orders.created";
    fn key(&self) -> Option<String> {
        Some(self.order.to_string())
    }
}

/// An order was paid.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OrderPaid {
    pub(crate) order: u64,
    pub(crate) paid_cents: u64,
}

impl lepus::Event for OrderPaid {
    const NAME: &'static str = "orders.paid";
    fn key(&self) -> Option<String> {
        Some(self.order.to_string())
    }
}

/// How many handlings each service prints before it only counts.
const PRINTED: usize = 4;

/// One handled event: its id and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Handled {
    pub(crate) id: String,
    pub(crate) name: String,
}

/// What one service handled, in the order it handled it.
#[derive(Debug)]
pub(crate) struct Tally {
    pub(crate) service: &'static str,
    handled: Mutex<Vec<Handled>>,
}

impl Tally {
    fn new(service: &'static str) -> Arc<Self> {
        Arc::new(Self { service, handled: Mutex::new(Vec::new()) })
    }

    /// Everything handled so far.
    pub(crate) fn handled(&self) -> Vec<Handled> {
        self.handled.lock().map(|h| h.clone()).unwrap_or_default()
    }

    fn record(&self, ctx: &EventContext, what: std::fmt::Arguments<'_>) {
        let Ok(mut handled) = self.handled.lock() else { return };
        handled.push(Handled { id: ctx.id().to_string(), name: ctx.name().to_owned() });
        if handled.len() <= PRINTED {
            outln!("  {:<9} handled {:<14} {what}", self.service, ctx.name());
            if handled.len() == PRINTED {
                outln!("  {:<9} (handles the rest without printing them)", self.service);
            }
        }
    }
}

async fn bill_created(order: OrderCreated, ctx: EventContext, State(t): State<Arc<Tally>>) -> anyhow::Result<()> {
    let cents = order.total_cents;
    t.record(&ctx, format_args!("order {}: invoice of {}.{:02}", order.order, cents / 100, cents % 100));
    Ok(())
}

async fn bill_paid(order: OrderPaid, ctx: EventContext, State(t): State<Arc<Tally>>) -> anyhow::Result<()> {
    t.record(&ctx, format_args!("order {}: invoice settled", order.order));
    Ok(())
}

async fn ship(order: OrderPaid, ctx: EventContext, State(t): State<Arc<Tally>>) -> anyhow::Result<()> {
    t.record(&ctx, format_args!("order {}: parcel prepared", order.order));
    Ok(())
}

async fn count_created(order: OrderCreated, ctx: EventContext, State(t): State<Arc<Tally>>) -> anyhow::Result<()> {
    t.record(&ctx, format_args!("order {}: counted", order.order));
    Ok(())
}

async fn count_paid(order: OrderPaid, ctx: EventContext, State(t): State<Arc<Tally>>) -> anyhow::Result<()> {
    t.record(&ctx, format_args!("order {}: revenue {}", order.order, order.paid_cents));
    Ok(())
}

/// A service of the demo: its name (`<prefix>-<service>`), its tally, and which events it should
/// handle.
pub(crate) struct DemoService {
    pub(crate) name: String,
    pub(crate) tally: Arc<Tally>,
    /// Handles `orders.created` events.
    pub(crate) created: bool,
    /// Its partitions, if ordered.
    pub(crate) partitions: Option<u16>,
}

/// Shipping's ordered partitions.
const SHIPPING_PARTITIONS: u16 = 4;

/// The three services and their subscriptions, their names prefixed by `prefix` (unique to the
/// run).
pub(crate) fn all(prefix: &str) -> Vec<(DemoService, Subscription)> {
    let service = |service: &'static str, created, partitions| DemoService {
        name: format!("{prefix}-{service}"),
        tally: Tally::new(service),
        created,
        partitions,
    };
    let billing = service("billing", true, None);
    let shipping = service("shipping", false, Some(SHIPPING_PARTITIONS));
    let analytics = service("analytics", true, None);
    vec![
        (Subscription::service(&billing.name).on(bill_created).on(bill_paid).pattern("orders.*"), billing),
        (Subscription::service(&shipping.name).on(ship).ordered(SHIPPING_PARTITIONS), shipping),
        (Subscription::service(&analytics.name).on(count_created).on(count_paid).pattern("orders.#"), analytics),
    ]
    .into_iter()
    .map(|(subscription, service)| (service, subscription))
    .collect()
}
