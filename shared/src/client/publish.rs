//! Publishing data events: [`Client::publish`] declares the event topology once, then publishes
//! each event to `lepus.events.in` (mandatory, confirmed): one publish reaches the event stream
//! and every subscribed service together.

use super::Client;
use crate::error::{Error, Result};
use crate::event::{Envelope, Event, Publish};
use crate::ids::EventId;
use crate::publisher::Outgoing;
use crate::topology;
use chrono::Utc;
use tracing::Instrument;

impl Client {
    /// Publishes an event (or a [`Publish`] with its key, time or id set) and returns its id once
    /// the broker has confirmed it: then it is in the event stream and in the queue of every
    /// service subscribed to its name. An event no service subscribes to is not an error: it is
    /// kept in `lepus.events.unrouted` (the newest 10,000) and in the stream.
    ///
    /// ```no_run
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct OrderCreated { order: u64 }
    /// # impl lepus::Event for OrderCreated { const NAME: &'static str = "orders.created"; }
    /// # async fn demo(client: lepus::Client) -> lepus::Result<()> {
    /// let id = client.publish(OrderCreated { order: 42 }).await?;
    /// let keyed = lepus::Publish::new(OrderCreated { order: 43 }).key(Some("43".into()));
    /// client.publish(keyed).await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish<E: Event>(&self, event: impl Into<Publish<E>>) -> Result<EventId> {
        let envelope = event.into().into_envelope(Utc::now())?;
        self.publish_envelope(&envelope).await?;
        Ok(envelope.id)
    }

    /// Publishes an event already in its envelope (one decoded elsewhere, say), keeping its id.
    pub async fn publish_envelope(&self, envelope: &Envelope) -> Result<()> {
        let (body, properties) =
            envelope.encode().map_err(Error::serde("encode", format!("event {}", envelope.name)))?;
        let limit = self.inner.options.max_payload;
        if body.len() > limit {
            return Err(Error::PayloadTooLarge { size: body.len(), limit });
        }
        if self.is_recording() {
            return Ok(());
        }
        let inner = &self.inner;
        inner
            .events
            .get_or_try_init(|| async {
                let channel = inner.broker.channel().await?;
                let declared = topology::declare_events(&channel, &inner.options.event_log).await;
                if channel.status().connected() {
                    drop(channel.close(200, "declared".into()).await);
                }
                declared
            })
            .await?;
        let span = tracing::debug_span!("publish", event.id = %envelope.id, event.name = %envelope.name);
        let outgoing = Outgoing {
            exchange: topology::EVENTS_INBOUND_EXCHANGE,
            routing_key: &envelope.name,
            body: &body,
            properties,
        };
        inner.publisher.publish(outgoing).instrument(span).await
    }
}
