//! Lepus's own JSON records kept in queues (leader announcements), read without
//! taking them.

use crate::broker::Broker;
use crate::error::{Error, Result};
use lapin::options::BasicGetOptions;
use serde::de::DeserializeOwned;

/// The newest record of `queue` by `key`, leaving every record in place: they are taken unacked
/// on a channel of their own, and closing it puts them back untouched. Records that do not decode
/// as `T` are passed over; `None` if none does. A missing queue is an error whose
/// [`Error::reply_code`] is `NotFound`.
pub async fn newest<T: DeserializeOwned, K: Ord>(
    broker: &Broker,
    queue: &str,
    key: impl Fn(&T) -> K,
) -> Result<Option<T>> {
    let channel = broker.channel().await?;
    let mut newest: Option<(K, T)> = None;
    let read = loop {
        match channel.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await {
            Ok(Some(message)) => {
                let Ok(record) = serde_json::from_slice::<T>(&message.delivery.data) else { continue };
                let record_key = key(&record);
                if newest.as_ref().is_none_or(|(newest_key, _)| record_key > *newest_key) {
                    newest = Some((record_key, record));
                }
            }
            Ok(None) => break Ok(newest.map(|(_, record)| record)),
            Err(e) => break Err(Error::amqp("basic.get")(e)),
        }
    };
    drop(channel.close(200, "read".into()).await);
    read
}
