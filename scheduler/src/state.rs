//! Each schedule's last fire time, kept in the broker: one message in the queue
//! `lepus.schedule.<group>.<name>` (at most one is kept), replaced in the same transaction as each
//! firing.

use chrono::{DateTime, Utc};
use lepus::internal::{Outgoing, Transaction, persistent_json, topology};
use lepus::lapin::Channel;
use lepus::lapin::options::{BasicGetOptions, BasicRejectOptions};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct State {
    schedule: String,
    last_fired: DateTime<Utc>,
}

/// When schedule `schedule` of scheduler group `group` last fired (`None` if never): declares the
/// schedule's state queue and reads its last fire time, leaving it in place.
pub async fn last_fired(channel: &Channel, group: &str, schedule: &str) -> lepus::Result<Option<DateTime<Utc>>> {
    topology::declare_schedule_state(channel, group, schedule).await?;
    let queue = topology::schedule_state_queue(group, schedule);
    let got = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .map_err(|source| lepus::Error::Amqp { operation: "basic.get", source })?;
    let Some(message) = got else { return Ok(None) };
    let state = serde_json::from_slice::<State>(&message.delivery.data).ok();
    message
        .delivery
        .acker
        .reject(BasicRejectOptions { requeue: true })
        .await
        .map_err(|source| lepus::Error::Amqp { operation: "basic.reject", source })?;
    Ok(state.map(|s| s.last_fired))
}

/// Adds "`schedule` last fired at `tick`" to the transaction.
pub(crate) async fn record(tx: &Transaction, group: &str, schedule: &str, tick: DateTime<Utc>) -> lepus::Result<()> {
    let body = serde_json::to_vec(&State { schedule: schedule.to_owned(), last_fired: tick })
        .map_err(|source| lepus::Error::Serde { action: "encode", what: "a schedule state".into(), source })?;
    let queue = topology::schedule_state_queue(group, schedule);
    tx.publish(Outgoing { exchange: "", routing_key: &queue, body: &body, properties: persistent_json() }).await
}
