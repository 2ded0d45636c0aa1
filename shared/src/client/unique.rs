//! Unique jobs on the client's side: [`Client::enqueue`], `submit` and `call` of a request made
//! unique ([`crate::Unique`]) take the key's lock before they send the job, and release it if
//! sending fails (see `crate::unique` for the lock).

use super::Client;
use crate::error::{Error, Result};
use crate::ids::JobId;
use crate::protocol::TaskMessage;
use crate::protocol::headers::set_header;
use crate::topology::validate_unique;
use crate::unique::{self, OnDuplicate, Taken, UNIQUE_KEY_HEADER, Unique};

/// What a unique send did.
#[derive(Debug)]
pub(super) enum UniqueSend {
    /// The lock was taken and the job sent.
    Sent,
    /// Job `0` holds the key: nothing was sent.
    Held(JobId),
}

impl UniqueSend {
    /// What `Client::enqueue` answers: the job's id, or for a duplicate the holder's id or
    /// [`Error::Duplicate`], as `unique` says.
    pub(super) fn enqueued(self, id: JobId, unique: &Unique) -> Result<JobId> {
        match self {
            UniqueSend::Sent => Ok(id),
            UniqueSend::Held(existing) if unique.on_duplicate() == OnDuplicate::ReturnExisting => Ok(existing),
            UniqueSend::Held(existing) => Err(Error::Duplicate { key: unique.key().to_owned(), existing }),
        }
    }
}

impl Client {
    /// Takes `unique`'s lock for `message`, then sends it to `queue` with the key in its
    /// [`UNIQUE_KEY_HEADER`]; releases the lock if the send fails. A recording client takes no
    /// lock.
    pub(super) async fn send_unique(
        &self,
        queue: &str,
        message: &mut TaskMessage,
        unique: &Unique,
    ) -> Result<UniqueSend> {
        validate_unique(unique.key(), unique.ttl())?;
        set_header(&mut message.extra_headers, UNIQUE_KEY_HEADER, unique.key());
        if self.is_recording() {
            self.send_task(queue, message).await?;
            return Ok(UniqueSend::Sent);
        }
        let inner = &self.inner;
        let since = match unique::take(&inner.broker, &inner.publisher, unique, &message.id).await? {
            Taken::Ours { since } => since,
            Taken::HeldBy(holder) => {
                tracing::debug!(key = unique.key(), holder = %holder, "unique key held; nothing enqueued");
                return Ok(UniqueSend::Held(holder));
            }
        };
        // The holder's id and the job go together: both are confirmed before this returns.
        let announced = unique::announce(&inner.publisher, unique, &message.id, since);
        let (announced, sent) = futures_util::future::join(announced, self.send_task(queue, message)).await;
        if let Err(e) = sent.and(announced) {
            match unique::release(&inner.broker, unique.key(), message.id.as_str()).await {
                Ok(released) => {
                    tracing::debug!(key = unique.key(), ?released, "job not sent; its unique lock released")
                }
                Err(release) => tracing::warn!(
                    key = unique.key(),
                    error = %release,
                    "job not sent and its unique lock not released: the key stays held until its ttl"
                ),
            }
            return Err(e);
        }
        Ok(UniqueSend::Sent)
    }
}
