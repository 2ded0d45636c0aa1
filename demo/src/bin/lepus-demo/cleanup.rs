//! Removing what the demo created on the broker, once its workers and schedulers have stopped:
//! the client's reply queue (by closing the client), the work queue and its dead-letter queue,
//! the schedules' state queues and the scheduler group's leader-info queue, and the three batch
//! queues (records, state, progress stream) if this run's workers created them (and the records
//! queue is now empty and unused).

use crate::console::{errln, outln};
use crate::schedules::Schedules;
use lepus::internal::topology::{self, BATCH_PROGRESS_STREAM, BATCH_RECORDS_QUEUE, BATCH_STATE_QUEUE};
use lepus::lapin::options::QueueDeleteOptions;
use lepus::{Client, WorkQueue};

/// Removes everything, saying what went; `true` if that worked. The scheduler group is named
/// after the work queue; `batch_records_existed` whether `lepus.batch.records` existed before the
/// demo started its workers.
pub(crate) async fn remove(
    client: &Client,
    queue: &WorkQueue,
    schedules: &Schedules,
    batch_records_existed: bool,
) -> bool {
    let closed = client.close().await;
    if let Err(e) = &closed {
        errln!("lepus-demo: cannot close the client and delete its reply queue: {e}");
    }
    let mut clean = closed.is_ok();
    outln!("Closed the client (its reply queue is deleted) and deleted the demo's queues:");
    let (name, dlq) = (queue.name(), queue.dead_letter_queue());
    let (_, jobs) = delete_all(client, [name.to_owned()], &mut clean).await;
    let (_, dead) = delete_all(client, [dlq.clone()], &mut clean).await;
    outln!("  {name} ({jobs} jobs left) and {dlq} ({dead} dead letters: the demo.fail jobs)");
    let state = [&schedules.pulse, &schedules.fanout].map(|s| topology::schedule_state_queue(name, s.name()));
    let state = state.into_iter().chain([topology::scheduler_leader_queue(name)]);
    let (state, _) = delete_all(client, state, &mut clean).await;
    if !state.is_empty() {
        outln!("  {} (the schedules' last fire times, and who led)", state.join(", "));
    }
    if !batch_records_existed {
        // Quorum queues refuse deletes `if-unused` or `if-empty`: it is looked at first.
        let records = topology::inspect_queue(client.broker(), BATCH_RECORDS_QUEUE).await.ok().flatten();
        if records.is_some_and(|queue| queue.messages > 0 || queue.consumers > 0) {
            outln!("  (left {BATCH_RECORDS_QUEUE}, which the workers created, in place: it is in use)");
        } else {
            let created = [BATCH_RECORDS_QUEUE, BATCH_STATE_QUEUE, BATCH_PROGRESS_STREAM].map(str::to_owned);
            let (deleted, _) = delete_all(client, created, &mut clean).await;
            if !deleted.is_empty() {
                outln!("  {}, which the demo's workers had created", deleted.join(", "));
            }
        }
    }
    clean
}

/// Deletes the queues of `names` that exist; their names and the messages they held. A queue
/// that cannot be deleted is reported, and makes the clean-up not `clean`.
async fn delete_all(client: &Client, names: impl IntoIterator<Item = String>, clean: &mut bool) -> (Vec<String>, u32) {
    let (mut deleted, mut messages) = (Vec::new(), 0);
    for name in names {
        match delete(client, &name).await {
            Ok(Some(held)) => {
                deleted.push(name);
                messages += held;
            }
            Ok(None) => {}
            Err(e) => {
                errln!("lepus-demo: {e:#}; delete it with `rabbitmqctl delete_queue {name}`");
                *clean = false;
            }
        }
    }
    (deleted, messages)
}

/// Deletes queue `name` if it exists; the messages it held, `None` if there was no such queue.
async fn delete(client: &Client, name: &str) -> anyhow::Result<Option<u32>> {
    if topology::inspect_queue(client.broker(), name).await?.is_none() {
        return Ok(None);
    }
    let channel = client.broker().channel().await?;
    let deleted = channel.queue_delete(name.into(), QueueDeleteOptions::default()).await;
    drop(channel.close(200, "deleted".into()).await);
    Ok(Some(deleted.map_err(|e| anyhow::anyhow!("cannot delete queue {name}: {e}"))?))
}
