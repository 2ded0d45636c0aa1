//! Unique jobs on the worker's side: when a job that carries a unique key
//! (`x-lepus-unique-key`, see `lepus::Unique`) ends for good, its lock is released, if the lock
//! is still this job's; a retry or a reschedule keeps it. Called by [`crate::delivery`] before
//! the job's result is sent, so that a caller who has the result can enqueue the key again.

use crate::outcome::Ended;
use lepus::Broker;
use lepus::internal::{Released, UNIQUE_KEY_HEADER, header_str, release_unique};
use lepus::lapin::BasicProperties;
use lepus::lapin::types::AMQPValue;

/// Releases the unique lock of the job delivered with `properties`, if it has one and `ended`
/// is final. Never fails the delivery: a lock that cannot be released lapses at its ttl.
pub(crate) async fn release(properties: &BasicProperties, ended: Ended, broker: &Broker) {
    if !ended.is_final() {
        return;
    }
    let Some(headers) = properties.headers().as_ref() else { return };
    let Some(value) = headers.inner().get(UNIQUE_KEY_HEADER) else { return };
    let Some(key) = header_str(headers, UNIQUE_KEY_HEADER) else {
        tracing::warn!(header = UNIQUE_KEY_HEADER, value = ?kind(value), "not a string: no unique lock released");
        return;
    };
    let Some(id) = header_str(headers, "id") else {
        tracing::warn!(key = %key, "a unique job without an `id` header: no unique lock released");
        return;
    };
    match release_unique(broker, &key, &id).await {
        Ok(Released::Released) => tracing::debug!(key = %key, "unique lock released"),
        Ok(Released::HeldByOther(holder)) => {
            tracing::info!(key = %key, holder = %holder, "the unique lock had lapsed and another job holds it now; left alone");
        }
        Ok(Released::NoLock) => tracing::info!(key = %key, "the unique lock had lapsed (its ttl) before the job ended"),
        Err(e) => {
            tracing::warn!(key = %key, error = %e, "cannot release the unique lock: the key stays held until its ttl")
        }
    }
}

/// What kind of value a header holds, for a warning (not the value: it may be large).
fn kind(value: &AMQPValue) -> &'static str {
    match value {
        AMQPValue::FieldTable(_) => "a table",
        AMQPValue::FieldArray(_) => "an array",
        AMQPValue::Void => "void",
        AMQPValue::Boolean(_) => "a boolean",
        _ => "a number or other non-string",
    }
}
