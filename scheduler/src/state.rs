//! Each schedule's last fire time, kept in the broker: one message in the queue
//! `lepus.schedule.<group>.<name>` (at most one is kept), replaced in the same transaction as each
//! firing.

use chrono::{DateTime, Utc};
use lepus::internal::{Connector, Outgoing, Transaction, persistent_json, topology};
use lepus::lapin::Channel;
use lepus::lapin::options::{BasicGetOptions, BasicRejectOptions};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::time::Instant;

/// The pause before the last fire times are read again.
const READ_AGAIN: Duration = Duration::from_millis(200);

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

/// The last fire times of `schedules`, in order, read on a connection of their own: a state
/// queue whose leader was on a node just lost refuses `basic.get` with a connection error
/// (`INTERNAL_ERROR … noproc`) until it has a new leader, which on the lock's connection would
/// give the lock up. Read again every 200 ms until `timeout`.
pub(crate) async fn read_all(
    connector: &Connector,
    group: &str,
    schedules: &[&str],
    timeout: Duration,
) -> lepus::Result<Vec<Option<DateTime<Utc>>>> {
    let deadline = Instant::now() + timeout;
    loop {
        let read = async {
            let connection = connector.connect(timeout).await?;
            let channel = connection
                .create_channel()
                .await
                .map_err(|source| lepus::Error::Amqp { operation: "channel open", source })?;
            let mut last = Vec::with_capacity(schedules.len());
            for schedule in schedules {
                last.push(last_fired(&channel, group, schedule).await?);
            }
            drop(connection.close(200, "read".into()).await);
            Ok(last)
        };
        match read.await {
            Err(e) if Instant::now() + READ_AGAIN < deadline => {
                tracing::info!(error = %e, "cannot read the schedules' last fire times yet; trying again");
                tokio::time::sleep(READ_AGAIN).await;
            }
            read => return read,
        }
    }
}

/// Adds "`schedule` last fired at `tick`" to the transaction.
pub(crate) async fn record(tx: &Transaction, group: &str, schedule: &str, tick: DateTime<Utc>) -> lepus::Result<()> {
    let body = serde_json::to_vec(&State { schedule: schedule.to_owned(), last_fired: tick })
        .map_err(|source| lepus::Error::Serde { action: "encode", what: "a schedule state".into(), source })?;
    let queue = topology::schedule_state_queue(group, schedule);
    tx.publish(Outgoing { exchange: "", routing_key: &queue, body: &body, properties: persistent_json() }).await
}
