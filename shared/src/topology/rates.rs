//! The queues of rate limits (see `lepus::Rate` and the worker's `rate_limits`): three per
//! limit key, none per job.
//!
//! - `lepus.rate.<key>`: the token bucket. Classic, transient, `x-max-length` = the rate's
//!   capacity in token messages (`Rate::bucket_length`) with `x-overflow: drop-head`, so tokens nobody takes do not pile up into a larger
//!   burst than the capacity; `x-expires` (30 min) removes the bucket of a key no worker uses.
//! - `lepus.rate.<key>.issuer`: classic, exclusive, auto-delete. The process whose connection
//!   declared it issues the key's tokens; it goes with that connection.
//! - `lepus.rate.<key>.issuer-info`: classic, transient, at most one message: the node name of
//!   the process that last became the issuer, and since when.

use super::{declare_queue, put_str, validate_name};
use crate::error::Result;
use crate::rate::Rate;
use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use std::time::Duration;

/// How long a key's queues live once no worker consumes or reads them.
const RATE_QUEUES_EXPIRE: Duration = Duration::from_secs(30 * 60);

/// The token bucket of rate key `key`.
#[must_use]
pub fn rate_token_queue(key: &str) -> String {
    format!("lepus.rate.{key}")
}

/// The exclusive queue whose holder issues the tokens of rate key `key`.
#[must_use]
pub fn rate_lock_queue(key: &str) -> String {
    format!("lepus.rate.{key}.issuer")
}

/// The queue in which the issuer of rate key `key` says who it is.
#[must_use]
pub fn rate_issuer_queue(key: &str) -> String {
    format!("lepus.rate.{key}.issuer-info")
}

/// Checks that `key` can name a rate limit's queues.
pub fn validate_rate_key(key: &str) -> Result<()> {
    validate_name("rate key", key)
}

/// The arguments of the token bucket of a limit of `rate`. A token message's body is the number
/// of starts it is worth (`Rate::token_weight`), in decimal.
#[must_use]
pub fn rate_token_arguments(rate: &Rate) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(i64::from(rate.bucket_length())));
    put_str(&mut args, "x-overflow", "drop-head");
    args.insert("x-expires".into(), AMQPValue::LongLongInt(expires_ms()));
    args
}

/// Declares the token bucket of rate key `key`. A bucket declared before with another capacity
/// is a `PRECONDITION_FAILED` error (and the broker closes `channel`).
pub async fn declare_rate_tokens(channel: &Channel, key: &str, rate: &Rate) -> Result<()> {
    validate_rate_key(key)?;
    declare_queue(channel, &rate_token_queue(key), QueueDeclareOptions::default(), rate_token_arguments(rate)).await
}

/// Tries to become the issuer of rate key `key` on `channel`: declares its exclusive lock queue.
/// Fails with `RESOURCE_LOCKED` (and the broker closes the channel) while another connection
/// holds it.
pub async fn take_rate_lock(channel: &Channel, key: &str) -> Result<()> {
    validate_rate_key(key)?;
    let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
    declare_queue(channel, &rate_lock_queue(key), options, FieldTable::default()).await
}

/// Declares the queue of issuer announcements of rate key `key`: only the latest is kept.
pub async fn declare_rate_issuer_info(channel: &Channel, key: &str) -> Result<()> {
    validate_rate_key(key)?;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
    args.insert("x-expires".into(), AMQPValue::LongLongInt(expires_ms()));
    declare_queue(channel, &rate_issuer_queue(key), QueueDeclareOptions::default(), args).await
}

fn expires_ms() -> i64 {
    i64::try_from(RATE_QUEUES_EXPIRE.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_at_most_its_capacity_and_drops_the_oldest() {
        let args = rate_token_arguments(&"100/s".parse().expect("valid"));
        let get = |k: &str| args.inner().get(k).cloned();
        assert_eq!(get("x-max-length"), Some(AMQPValue::LongLongInt(10)));
        assert_eq!(get("x-overflow"), Some(AMQPValue::LongString("drop-head".into())));
        assert_eq!(rate_token_queue("sms"), "lepus.rate.sms");
        assert!(validate_rate_key("has space").is_err());
    }
}
