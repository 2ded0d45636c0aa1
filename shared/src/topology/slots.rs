//! The queues of concurrency keys (see `crate::Concurrency`): per key and limit, a queue of
//! slot messages, and, only while it is being created, a lock and a marker.
//!
//! - `lepus.slots.<key>.<limit>`: classic, durable, `x-expires` 10 minutes. Holds `limit` slot
//!   messages, put there once, in one transaction, by whoever created it. A worker holds a slot
//!   unacked (a consumer with prefetch 1, on a channel of its own) while a job with that key runs,
//!   and gives it back by closing that channel; the broker gives it back too when the holder's
//!   connection dies. The limit is in the name, so a changed limit gets a fresh set of slots.
//!   An unused queue (no consumer, nothing fetched, for 10 minutes: no slot is held and nobody
//!   waits) goes away by itself; a held slot keeps its consumer, so its queue never expires.
//!   Classic, not quorum: keys can be many (one per tenant), and a quorum queue is a Raft group.
//! - `lepus.slots.<key>.<limit>.init`: classic, exclusive: the lock of whoever creates the slot
//!   queue (only one connection can hold it; the others get `RESOURCE_LOCKED`).
//! - `lepus.slots.<key>.<limit>.filling`: classic, durable, `x-expires` 1 day: exists from just
//!   before the slot queue is declared until its slots are committed. A creator that finds it
//!   under the lock knows the previous creator died half-way, and creates the slot queue anew.

use super::{declare_queue, durable, put_str};
use crate::concurrency::Concurrency;
use crate::error::{Error, Result};
use lapin::Channel;
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use std::time::Duration;

/// How long a slot queue nobody uses lives on.
pub const SLOT_QUEUE_EXPIRES: Duration = Duration::from_secs(600);

/// How long a marker of an interrupted creation lives on.
const SLOT_MARKER_EXPIRES: Duration = Duration::from_secs(24 * 3600);

/// The queue of `concurrency`'s slots.
#[must_use]
pub fn slot_queue(concurrency: &Concurrency) -> String {
    format!("lepus.slots.{}.{}", concurrency.key, concurrency.limit)
}

/// The exclusive queue whose holder creates the slot queue.
#[must_use]
pub fn slot_lock_queue(concurrency: &Concurrency) -> String {
    format!("{}.init", slot_queue(concurrency))
}

/// The queue that exists while the slot queue is being filled.
#[must_use]
pub fn slot_marker_queue(concurrency: &Concurrency) -> String {
    format!("{}.filling", slot_queue(concurrency))
}

/// Declares the slot queue (idempotent).
pub async fn declare_slot_queue(channel: &Channel, concurrency: &Concurrency) -> Result<()> {
    concurrency.validate()?;
    declare_queue(channel, &slot_queue(concurrency), durable(), expiring(SLOT_QUEUE_EXPIRES)).await
}

/// Tries to take the creation lock: fails with `RESOURCE_LOCKED` (and the broker closes the
/// channel) while another connection holds it. Released by [`release_slot_lock`] or when the
/// connection closes.
pub async fn take_slot_lock(channel: &Channel, concurrency: &Concurrency) -> Result<()> {
    concurrency.validate()?;
    let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
    declare_queue(channel, &slot_lock_queue(concurrency), options, FieldTable::default()).await
}

/// Releases the creation lock.
pub async fn release_slot_lock(channel: &Channel, concurrency: &Concurrency) -> Result<()> {
    delete(channel, &slot_lock_queue(concurrency)).await
}

/// Declares the marker of a creation under way.
pub async fn declare_slot_marker(channel: &Channel, concurrency: &Concurrency) -> Result<()> {
    declare_queue(channel, &slot_marker_queue(concurrency), durable(), expiring(SLOT_MARKER_EXPIRES)).await
}

/// Deletes the marker: the slots are in.
pub async fn delete_slot_marker(channel: &Channel, concurrency: &Concurrency) -> Result<()> {
    delete(channel, &slot_marker_queue(concurrency)).await
}

/// Deletes a slot queue whose creation was interrupted (it holds no slot).
pub async fn delete_slot_queue(channel: &Channel, concurrency: &Concurrency) -> Result<()> {
    delete(channel, &slot_queue(concurrency)).await
}

async fn delete(channel: &Channel, name: &str) -> Result<()> {
    channel
        .queue_delete(name.into(), QueueDeleteOptions::default())
        .await
        .map(drop)
        .map_err(Error::amqp("queue delete"))
}

fn expiring(after: Duration) -> FieldTable {
    let mut args = FieldTable::default();
    put_str(&mut args, "x-queue-type", "classic");
    let millis = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
    args.insert("x-expires".into(), AMQPValue::LongLongInt(millis));
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_and_its_limit_name_the_queues() {
        let concurrency = Concurrency::new("tenant-42", 2);
        assert_eq!(slot_queue(&concurrency), "lepus.slots.tenant-42.2");
        assert_eq!(slot_lock_queue(&concurrency), "lepus.slots.tenant-42.2.init");
        assert_eq!(slot_marker_queue(&concurrency), "lepus.slots.tenant-42.2.filling");
        assert_ne!(slot_queue(&Concurrency::new("tenant-42", 3)), slot_queue(&concurrency));
    }
}
