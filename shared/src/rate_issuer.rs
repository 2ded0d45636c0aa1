//! Who issues a rate key's tokens: the announcement the issuer puts in
//! `lepus.rate.<key>.issuer-info` when it takes the key's lock, read together with that lock
//! (see the worker's `rate_issuer`), so operators and tests learn it from the broker.

use crate::broker::Broker;
use crate::error::{ReplyCode, Result};
use crate::records;
use crate::topology;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The process issuing a rate key's tokens, as it announced itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateIssuer {
    /// Its node name, `host:pid`.
    pub node: String,
    /// The rate it issues at, as text (`"20/s"`).
    pub rate: String,
    /// When it became the issuer.
    pub since: DateTime<Utc>,
}

/// Who issues the tokens of rate key `key` right now: `None` if no process holds the key's lock,
/// or if the one that has just taken it has not announced itself yet (a moment).
pub async fn rate_issuer(broker: &Broker, key: &str) -> Result<Option<RateIssuer>> {
    topology::validate_rate_key(key)?;
    match topology::inspect_queue(broker, &topology::rate_lock_queue(key)).await {
        Ok(None) => return Ok(None),
        // Another connection holds the exclusive lock queue: a process issues.
        Err(e) if e.reply_code() == Some(ReplyCode::ResourceLocked) => {}
        Ok(Some(_)) => {}
        Err(e) => return Err(e),
    }
    match records::newest(broker, &topology::rate_issuer_queue(key), |issuer: &RateIssuer| issuer.since).await {
        Err(e) if e.reply_code() == Some(ReplyCode::NotFound) => Ok(None),
        read => read,
    }
}
