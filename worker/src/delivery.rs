//! One delivery, start to finish: decode, run the handler, publish the result (or dead-letter),
//! and ack only once what had to be published is confirmed.
//!
//! | the message…                     | result sent to `reply_to`     | then            |
//! |----------------------------------|-------------------------------|-----------------|
//! | ran and returned a value         | `SUCCESS` with the value      | ack             |
//! | ran and failed (or panicked)     | `FAILURE` with the message    | ack             |
//! | names a job nobody registered    | `FAILURE` (`NotRegistered`)   | dead-letter, ack|
//! | has arguments the input rejects  | `FAILURE` (`TypeError`)       | dead-letter, ack|
//! | is not Celery v2 JSON, too large | none (no trustworthy reply_to)| dead-letter, ack|
//!
//! If a publish fails the delivery is nacked back to the queue: it is redelivered, and the
//! queue's delivery limit ends any loop.

use crate::context::JobContext;
use crate::registry::{CallError, Registry};
use crate::stats::{Ended, WorkerStats};
use futures_lite::FutureExt;
use lepus::dead_letter::{self, Reason};
use lepus::lapin::message::Delivery;
use lepus::lapin::options::{BasicAckOptions, BasicNackOptions};
use lepus::protocol::{ExceptionInfo, ResultMessage, TaskMessage};
use lepus::topology::WorkQueue;
use lepus::{Error, Outgoing, Publisher};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What every delivery needs from the worker.
pub(crate) struct Shared {
    pub(crate) registry: Registry,
    pub(crate) publisher: Publisher,
    pub(crate) stop: CancellationToken,
    pub(crate) max_payload: usize,
    pub(crate) broker_timeout: Duration,
    pub(crate) stats: Arc<WorkerStats>,
}

struct Reply {
    to: String,
    correlation_id: String,
    result: ResultMessage,
}

enum Outcome {
    Ran { reply: Option<Reply>, ended: Ended },
    Refused { reason: Reason, error: String, reply: Option<Reply> },
}

/// Processes one delivery; holds its concurrency permit until the delivery is settled.
pub(crate) async fn process(
    delivery: Delivery,
    queue: Arc<WorkQueue>,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) {
    let refuse = |reason, error| Outcome::Refused { reason, error, reply: None };
    let decoded = if delivery.data.len() > shared.max_payload {
        let error =
            format!("body of {} bytes exceeds the worker's limit of {} bytes", delivery.data.len(), shared.max_payload);
        Err(refuse(Reason::TooLarge, error))
    } else {
        TaskMessage::decode(&delivery.properties, &delivery.data)
            .map_err(|e| refuse(Reason::Undecodable, e.to_string()))
    };
    match decoded {
        Ok(message) => {
            let span = tracing::info_span!("job", job.id = %message.id, job.name = %message.task);
            async {
                let outcome = run(message, &shared).await;
                settle(&delivery, &queue, &shared, outcome).await;
            }
            .instrument(span)
            .await;
        }
        Err(refused) => settle(&delivery, &queue, &shared, refused).await,
    }
    drop(permit);
}

async fn run(mut message: TaskMessage, shared: &Shared) -> Outcome {
    let destination = message.reply_destination().map(|(to, id)| (to.to_owned(), id.to_owned()));
    let reply =
        |result: ResultMessage| destination.clone().map(|(to, correlation_id)| Reply { to, correlation_id, result });
    let Some((name, handler)) = shared.registry.get(&message.task) else {
        let error = format!(
            "no job named {:?} is registered on this worker; it runs {:?}",
            message.task,
            shared.registry.names()
        );
        // Celery's NotRegistered takes the task name as its message.
        let exception = ExceptionInfo::python("celery.exceptions", "NotRegistered", message.task.clone());
        return Outcome::Refused {
            reason: Reason::UnknownJob,
            error,
            reply: reply(ResultMessage::failure(&message.id, &exception, None)),
        };
    };
    let context = JobContext::new(message.id.clone(), Arc::clone(name), message.retries, shared.stop.child_token());
    let started = Instant::now();
    let arguments = std::mem::take(&mut message.arguments);
    let called = AssertUnwindSafe(async { handler.call(arguments, context).await }).catch_unwind().await;
    let elapsed = started.elapsed();
    match called {
        Ok(Ok(value)) => {
            tracing::debug!(?elapsed, "job succeeded");
            Outcome::Ran { reply: reply(ResultMessage::success(&message.id, value)), ended: Ended::Succeeded }
        }
        Ok(Err(CallError::Failed(e))) => {
            tracing::warn!(?elapsed, error = %e, "job failed");
            let exception = ExceptionInfo::new("JobError", e.message());
            Outcome::Ran { reply: reply(ResultMessage::failure(&message.id, &exception, None)), ended: Ended::Failed }
        }
        Ok(Err(CallError::BadInput(error))) => {
            let error = format!("arguments do not fit {}: {error}", message.task);
            let exception = ExceptionInfo::python("builtins", "TypeError", error.clone());
            Outcome::Refused {
                reason: Reason::BadInput,
                error,
                reply: reply(ResultMessage::failure(&message.id, &exception, None)),
            }
        }
        Err(panic) => {
            let text = panic_message(panic.as_ref());
            tracing::error!(?elapsed, panic = %text, "job panicked");
            let exception = ExceptionInfo::new("JobPanicked", format!("the job panicked: {text}"));
            Outcome::Ran { reply: reply(ResultMessage::failure(&message.id, &exception, None)), ended: Ended::Failed }
        }
    }
}

async fn settle(delivery: &Delivery, queue: &WorkQueue, shared: &Shared, outcome: Outcome) {
    if !delivery.acker.usable() {
        // The channel died while the job ran: the broker has already requeued the message and
        // will deliver it again, so a result now would only be a duplicate.
        tracing::warn!("the broker connection was lost during the job; the broker will redeliver it");
        return;
    }
    let (reply, ended) = match outcome {
        Outcome::Ran { reply, ended } => (reply, ended),
        Outcome::Refused { reason, error, reply } => {
            let properties = dead_letter::mark(&delivery.properties, reason, &error, queue.name());
            let dlq = queue.dead_letter_queue();
            let published = shared
                .publisher
                .publish(Outgoing { exchange: "", routing_key: &dlq, body: &delivery.data, properties })
                .await;
            if let Err(e) = published {
                return requeue(delivery, shared, &format!("cannot dead-letter to {dlq}: {e}")).await;
            }
            tracing::warn!(queue = queue.name(), %reason, %error, "message dead-lettered");
            (reply, Ended::DeadLettered)
        }
    };
    if let Some(Reply { to, correlation_id, result }) = reply {
        let published = match result.encode(&correlation_id) {
            Ok((body, properties)) => {
                shared.publisher.publish(Outgoing { exchange: "", routing_key: &to, body: &body, properties }).await
            }
            Err(e) => Err(Error::Serde { action: "encode", what: "a result".into(), reason: e.to_string() }),
        };
        match published {
            Ok(()) => {}
            Err(Error::Unroutable { .. }) => {
                tracing::warn!(reply_to = to, "the caller's reply queue is gone; result dropped")
            }
            Err(e) => return requeue(delivery, shared, &format!("cannot publish the result: {e}")).await,
        }
    }
    match tokio::time::timeout(shared.broker_timeout, delivery.acker.ack(BasicAckOptions::default())).await {
        Ok(Ok(true)) => shared.stats.count(ended),
        Ok(Ok(false) | Err(_)) | Err(_) => {
            tracing::warn!(
                delivery_tag = delivery.delivery_tag,
                "ack failed (connection lost?); the broker will redeliver the message"
            );
        }
    }
}

/// Hands the message back to the broker for another delivery.
async fn requeue(delivery: &Delivery, shared: &Shared, why: &str) {
    tracing::error!(error = why, "message returned to its queue for redelivery");
    let nack = delivery.acker.nack(BasicNackOptions { requeue: true, multiple: false });
    drop(tokio::time::timeout(shared.broker_timeout, nack).await);
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_owned())
}
