//! Dead letters: messages a worker refused, jobs that failed for good, and messages the broker
//! gave up on, kept in the work queue's dead-letter queue with the reason in their headers; and
//! [`DeadLetters`], to list them, send them back to their queue, or purge them.
//!
//! A worker dead-letters by publishing the original body and properties to `<queue>.dlq` with
//! these headers added, waiting for the confirm, and only then acking the original. The broker
//! does not get to dead-letter a message for its delivery limit in the usual case: a worker that
//! receives a message the broker has already handed out `limit` times (each time its worker died
//! or lost its connection) dead-letters it itself, as `delivery-limit`, and answers its caller.
//! Should that worker die too, the broker dead-letters the message (adding `x-death` and
//! `x-first-death-reason = delivery_limit`).

pub(crate) mod marks;
mod queue;
mod reason;

pub use queue::{DeadLetter, DeadLetters};
pub use reason::{ATTEMPTS_HEADER, ERROR_HEADER, QUEUE_HEADER, REASON_HEADER, Reason, TIME_HEADER, WORKER_HEADER};
