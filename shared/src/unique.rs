//! Unique jobs: [`Unique`], the option that a job with a given key is enqueued only while no other
//! job with that key is queued or running (or for at most a ttl), and the lock on the broker that
//! enforces it.
//!
//! The lock of key `k` is the one message of the classic queue `lepus.unique.<k>` (see
//! `topology/unique.rs`: `x-max-length` 1 with `reject-publish`, `x-message-ttl` = the ttl); its
//! body is the holder's job id. The holder's id is also in `lepus.unique-holder.<k>`, where the
//! clients the lock refused read it: a lock read with `basic.get` would be out of its queue's
//! length while it is read, and a second lock published then would be taken.
//!
//! - **take** (the client, before it sends the job): declare both queues, publish the lock with
//!   a publisher confirm. An ack means the key is ours: publish the id to the holder queue (with
//!   the job itself). A nack means the queue is full, somebody holds the key: read the holder's
//!   id (`basic.get`, then reject with requeue) and answer it. If the holder queue is empty (the
//!   holder has not written it yet, or the lock was just released or lapsed), try again shortly.
//! - **release** (the worker, when the job ended for good; the client, if sending the job failed):
//!   take the holder queue's id if it is this job's (else requeue it and stop: another job holds
//!   the key), then `basic.get` the lock and ack it if its body is this job's id, else reject it
//!   with requeue: a job never removes another job's lock.

use crate::broker::Broker;
use crate::error::{Error, ReplyCode, Result};
use crate::ids::JobId;
use crate::publisher::{Outgoing, Publisher};
use crate::topology;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicRejectOptions};
use lapin::{BasicProperties, Channel};
use std::time::Duration;
use tokio::time::Instant;

/// The task message header that names a unique job's key, so that the worker that ends the job
/// releases its lock. A Python client that takes the lock itself sets it (see the README).
pub const UNIQUE_KEY_HEADER: &str = "x-lepus-unique-key";

/// How long a refused take waits for the holder's id (written right after its lock) before it
/// gives up.
const HOLDER_PATIENCE: Duration = Duration::from_secs(2);

/// The pause before a refused take tries again when the holder's id is not there yet.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// How much sooner than its lock a holder's id expires, so that a reader never finds the id of a
/// holder whose lock has lapsed.
const HOLDER_LEAD: Duration = Duration::from_millis(200);

/// Makes a job unique by key: while a job with the key is queued or running, and for at most
/// `ttl`, enqueueing another job with that key enqueues nothing and returns the first job's id
/// ([`Unique::new`]), or fails with [`Error::Duplicate`] ([`Unique::or_error`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unique {
    key: String,
    ttl: Duration,
    on_duplicate: OnDuplicate,
}

/// What enqueueing a job whose key is held does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnDuplicate {
    /// Enqueue nothing and return the holder's id (`Client::submit` and `call` fail with
    /// [`Error::Duplicate`] all the same: the holder's result goes to its own sender).
    #[default]
    ReturnExisting,
    /// Enqueue nothing and fail with [`Error::Duplicate`], naming the holder.
    Error,
}

impl Unique {
    /// Unique by `key` for at most `ttl`; a duplicate gets the holder's id.
    #[must_use]
    pub fn new(key: impl Into<String>, ttl: Duration) -> Self {
        Self { key: key.into(), ttl, on_duplicate: OnDuplicate::ReturnExisting }
    }

    /// The same, but a duplicate fails with [`Error::Duplicate`].
    #[must_use]
    pub fn or_error(self) -> Self {
        Self { on_duplicate: OnDuplicate::Error, ..self }
    }

    /// The key.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The longest the key is held.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// What a duplicate gets.
    #[must_use]
    pub fn on_duplicate(&self) -> OnDuplicate {
        self.on_duplicate
    }
}

/// What a take found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Taken {
    /// The key is this job's now; the lock was published at `since`. Announce it ([`announce`]).
    Ours { since: Instant },
    /// Job `0` holds the key.
    HeldBy(JobId),
}

/// What a release did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// This job's lock was removed: the key is free.
    Released,
    /// The key is held by another job (this one's lock had lapsed): left alone.
    HeldByOther(JobId),
    /// No lock (it lapsed, or its queue is gone).
    NoLock,
}

/// Takes the lock of `unique`'s key for job `id` on `broker`, publishing it through `publisher`
/// (confirmed); when the broker refuses it, reads the holder's id.
pub(crate) async fn take(broker: &Broker, publisher: &Publisher, unique: &Unique, id: &JobId) -> Result<Taken> {
    let (lock_queue, holder_queue) =
        (topology::unique_lock_queue(&unique.key), topology::unique_holder_queue(&unique.key));
    let deadline = Instant::now() + HOLDER_PATIENCE;
    loop {
        let (channel, exist) = topology::declare_unique(broker, &unique.key, unique.ttl).await?;
        let found = if exist {
            let since = Instant::now();
            let lock = Outgoing {
                exchange: "",
                routing_key: &lock_queue,
                body: id.as_str().as_bytes(),
                properties: persistent(),
            };
            match publisher.publish(lock).await {
                Ok(()) => Ok(Some(Taken::Ours { since })),
                Err(Error::Nacked { .. }) => match read(&channel, &holder_queue, |_| false).await {
                    Ok(Read::Other(holder)) => Ok(Some(Taken::HeldBy(holder))),
                    Ok(_) => Ok(None),
                    Err(e) => Err(e),
                },
                // The queue expired between the declare and the publish.
                Err(Error::Unroutable { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        } else {
            Ok(None)
        };
        close(&channel).await;
        if let Some(found) = found? {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            let reason = "held, but its holder's id did not appear (its client may have stopped right after it took the lock, which then lapses at its ttl)";
            return Err(Error::UniqueLock { key: unique.key.clone(), reason });
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Writes job `id` as the holder of `unique`'s key, whose lock was published at `since`; it
/// expires [`HOLDER_LEAD`] before the lock (at once if the lock is that close to lapsing).
pub(crate) async fn announce(publisher: &Publisher, unique: &Unique, id: &JobId, since: Instant) -> Result<()> {
    let left = unique.ttl.saturating_sub(since.elapsed()).saturating_sub(HOLDER_LEAD);
    if left.is_zero() {
        return Ok(());
    }
    let queue = topology::unique_holder_queue(&unique.key);
    let properties = persistent().with_expiration(left.as_millis().to_string().into());
    publisher.publish(Outgoing { exchange: "", routing_key: &queue, body: id.as_str().as_bytes(), properties }).await
}

/// Releases the lock of `key` if job `id` holds it (see the module docs).
pub async fn release(broker: &Broker, key: &str, id: &str) -> Result<Released> {
    let channel = broker.channel().await?;
    let released = release_on(&channel, key, id).await;
    close(&channel).await;
    released
}

async fn release_on(channel: &Channel, key: &str, id: &str) -> Result<Released> {
    let own = |holder: &str| holder == id;
    match read(channel, &topology::unique_holder_queue(key), own).await? {
        Read::Other(holder) => return Ok(Released::HeldByOther(holder)),
        Read::Taken | Read::Empty => {}
    }
    Ok(match read(channel, &topology::unique_lock_queue(key), own).await? {
        Read::Taken => Released::Released,
        Read::Other(holder) => Released::HeldByOther(holder),
        Read::Empty => Released::NoLock,
    })
}

/// What a read found.
enum Read {
    /// The message was `own`: it is acked, gone.
    Taken,
    /// The message names another job: put back.
    Other(JobId),
    /// No message (or no queue).
    Empty,
}

/// Reads the one message of `queue`: acks it if `own` says its body is ours, else requeues it.
async fn read(channel: &Channel, queue: &str, own: impl Fn(&str) -> bool) -> Result<Read> {
    let got = match channel.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await {
        Ok(got) => got,
        Err(e) if ReplyCode::of(&e) == Some(ReplyCode::NotFound) => return Ok(Read::Empty),
        Err(e) => return Err(Error::amqp("read a unique lock")(e)),
    };
    let Some(message) = got else { return Ok(Read::Empty) };
    let holder = String::from_utf8_lossy(&message.delivery.data).into_owned();
    if own(&holder) {
        message.delivery.acker.ack(BasicAckOptions::default()).await.map_err(Error::amqp("ack a unique lock"))?;
        return Ok(Read::Taken);
    }
    let requeue = BasicRejectOptions { requeue: true };
    message.delivery.acker.reject(requeue).await.map_err(Error::amqp("requeue a unique lock"))?;
    Ok(Read::Other(JobId::from(holder)))
}

/// A lock's (or holder id's) properties: persistent, plain text (the body is a job id).
fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2).with_content_type("text/plain".into())
}

async fn close(channel: &Channel) {
    if channel.status().connected() {
        drop(channel.close(200, "unique lock".into()).await);
    }
}
