//! The queues of unique jobs (see `crate::unique`), two small classic queues per key:
//!
//! - `lepus.unique.<key>`, the lock: `x-max-length: 1` with `x-overflow: reject-publish` (a
//!   second lock is nacked, the first stays), `x-message-ttl` = the ttl (the lock lapses by
//!   itself). Only the client that takes it and the worker that releases it touch it.
//! - `lepus.unique-holder.<key>`, the holder's job id, for the clients the lock refused:
//!   `x-max-length: 1` (the newest id stays); each id carries its own expiration, a little
//!   shorter than what is left of its lock's ttl. Kept apart from the lock because reading a
//!   message (`basic.get`) takes it out of the queue's length for a moment, and a lock read
//!   that way would let a second lock in.
//!
//! Both have `x-expires` = the ttl plus a second (unused, they go soon after their messages), and
//! are durable with persistent messages, so a lock survives a broker restart.

use super::{declare_queue, durable, inspect_queue_on, validate_name};
use crate::broker::Broker;
use crate::error::{Error, ReplyCode, Result};
use lapin::Channel;
use lapin::types::{AMQPValue, FieldTable};
use std::time::Duration;

/// How much longer than its lock an unused lock or holder queue lives.
const EXPIRES_MARGIN: Duration = Duration::from_secs(1);

/// The lock queue of unique key `key`.
#[must_use]
pub fn unique_lock_queue(key: &str) -> String {
    format!("lepus.unique.{key}")
}

/// The queue of the job id that holds unique key `key`.
#[must_use]
pub fn unique_holder_queue(key: &str) -> String {
    format!("lepus.unique-holder.{key}")
}

/// Checks that `key` can name a lock queue (the rules of queue names), and that `ttl` is at least
/// a millisecond.
pub fn validate_unique(key: &str, ttl: Duration) -> Result<()> {
    validate_name("unique key", key)?;
    if ttl.as_millis() == 0 {
        return Err(Error::InvalidName {
            kind: "unique ttl",
            name: format!("{ttl:?}"),
            reason: "must be at least 1 ms",
        });
    }
    Ok(())
}

/// The arguments of a lock queue whose lock lasts `ttl`.
#[must_use]
pub fn unique_lock_arguments(ttl: Duration) -> FieldTable {
    let mut args = holder_arguments(ttl);
    args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(millis(ttl)));
    args
}

/// The arguments of a holder queue for a lock of `ttl`.
fn holder_arguments(ttl: Duration) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
    args.insert("x-expires".into(), AMQPValue::LongLongInt(millis(ttl).saturating_add(millis(EXPIRES_MARGIN))));
    args
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Declares the lock and holder queues of `key` for a lock of `ttl`, each on a channel of its own
/// from `broker`. A queue that exists with another ttl keeps it (the broker refuses the declare
/// with `PRECONDITION_FAILED`; it is then checked to exist). Returns the lock queue's channel,
/// open, and whether both queues exist (`false`: one vanished meanwhile; declare again).
pub async fn declare_unique(broker: &Broker, key: &str, ttl: Duration) -> Result<(Channel, bool)> {
    validate_unique(key, ttl)?;
    let (holder_queue, lock_queue) = (unique_holder_queue(key), unique_lock_queue(key));
    let holder = declare_or_keep(broker, &holder_queue, holder_arguments(ttl));
    let lock = declare_or_keep(broker, &lock_queue, unique_lock_arguments(ttl));
    let (holder, lock) = futures_util::future::join(holder, lock).await;
    let (holder_channel, holder_exists) = holder?;
    close(&holder_channel).await;
    let (channel, lock_exists) = lock?;
    Ok((channel, holder_exists && lock_exists))
}

/// Declares queue `name` with `args` on a new channel; if it exists with other arguments, checks
/// it exists on another. The channel, and whether the queue exists.
async fn declare_or_keep(broker: &Broker, name: &str, args: FieldTable) -> Result<(Channel, bool)> {
    let channel = broker.channel().await?;
    match declare_queue(&channel, name, durable(), args).await {
        Ok(()) => Ok((channel, true)),
        Err(e) if e.reply_code() == Some(ReplyCode::PreconditionFailed) => {
            let channel = broker.channel().await?;
            let exists = inspect_queue_on(&channel, name).await?.is_some();
            if exists { Ok((channel, true)) } else { Ok((broker.channel().await?, false)) }
        }
        Err(e) => {
            close(&channel).await;
            Err(e)
        }
    }
}

async fn close(channel: &Channel) {
    if channel.status().connected() {
        drop(channel.close(200, "declared".into()).await);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_queue_holds_one_lock_for_its_ttl() {
        let args = unique_lock_arguments(Duration::from_secs(30));
        let get = |name: &str| args.inner().get(name).cloned();
        assert_eq!(get("x-max-length"), Some(AMQPValue::LongLongInt(1)));
        assert_eq!(get("x-overflow"), Some(AMQPValue::LongString("reject-publish".into())));
        assert_eq!(get("x-message-ttl"), Some(AMQPValue::LongLongInt(30_000)));
        assert_eq!(get("x-expires"), Some(AMQPValue::LongLongInt(31_000)));
        let holder = holder_arguments(Duration::from_secs(30));
        assert_eq!(holder.inner().get("x-overflow"), None, "the newest id stays");
        assert_eq!(unique_lock_queue("user-7"), "lepus.unique.user-7");
        assert_eq!(unique_holder_queue("user-7"), "lepus.unique-holder.user-7");
    }

    #[test]
    fn keys_and_ttls_are_checked() {
        assert!(validate_unique("user-7", Duration::from_secs(1)).is_ok());
        assert!(validate_unique("", Duration::from_secs(1)).is_err());
        assert!(validate_unique("has space", Duration::from_secs(1)).is_err());
        assert!(validate_unique(&"k".repeat(191), Duration::from_secs(1)).is_err());
        assert!(validate_unique("user-7", Duration::ZERO).is_err());
    }
}
