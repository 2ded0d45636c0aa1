//! Removing what the demo created on the broker, once its workers and schedulers have stopped:
//! the client's reply queue, the demo queue and its dead-letter queue, the schedules' state queues
//! (`lepus.schedule.<group>.<name>`), the progress queues of the client batch and of every
//! scheduled batch (`lepus.batch.<id>`), and the batch records queue `lepus.batches` if this run's
//! workers were the ones that created it and it is now empty and unused.

use crate::console::{errln, outln};
use crate::firings::Window;
use crate::queues;
use crate::schedule_file::DemoSchedules;
use lepus::WorkQueue;
use lepus::internal::topology::{self, BATCH_RECORDS_QUEUE};
use lepus::lapin::options::QueueDeleteOptions;
use lepus::{BatchId, Client};

/// What there is to remove.
#[derive(Debug)]
pub(crate) struct Leftovers<'a> {
    pub(crate) client: &'a Client,
    pub(crate) queue: &'a WorkQueue,
    /// The schedule group and its schedules, once the schedule file was written.
    pub(crate) schedules: Option<(&'a str, &'a DemoSchedules)>,
    /// When the schedulers ran, if they were started.
    pub(crate) window: Option<Window>,
    pub(crate) client_batch: Option<&'a BatchId>,
    /// Whether `lepus.batches` existed before the demo started its workers.
    pub(crate) batch_records_existed: bool,
}

impl Leftovers<'_> {
    /// Removes everything, saying what went; `true` if that worked.
    pub(crate) async fn remove(&self) -> bool {
        let closed = close_client(self.client).await;
        outln!("Closed the client (its reply queue is deleted) and deleted the demo's queues:");
        let work = self.delete(&[self.queue.name().to_owned()]).await;
        let dead = self.delete(&[self.queue.dead_letter_queue()]).await;
        outln!(
            "  {} ({} jobs left) and {} ({} dead letters: the demo.fail jobs)",
            self.queue.name(),
            work.messages,
            self.queue.dead_letter_queue(),
            dead.messages
        );
        let mut clean = closed && work.clean && dead.clean;
        if let Some((group, schedules)) = self.schedules {
            let states: Vec<String> =
                schedules.all().iter().map(|s| topology::schedule_state_queue(group, s.name())).collect();
            let deleted = self.delete(&states).await;
            outln!("  {} (the schedules' last fire times)", deleted.names.join(" and "));
            clean &= deleted.clean;
        }
        // Every tick in the window is tried: the batches fired are those whose queue exists.
        let ticks = match (self.schedules, self.window) {
            (Some((_, schedules)), Some(window)) => window.firing_ids(&schedules.fanout),
            _ => Vec::new(),
        };
        let ticks: Vec<String> = ticks.into_iter().map(|id| topology::batch_progress_queue(&id.into())).collect();
        let scheduled = self.delete(&ticks).await;
        let client_batch: Vec<String> = self.client_batch.map(topology::batch_progress_queue).into_iter().collect();
        let client = self.delete(&client_batch).await;
        let mut whose = Vec::new();
        if !client.names.is_empty() {
            whose.push("the client batch".to_owned());
        }
        whose.push(format!("{} scheduled batches", scheduled.names.len()));
        let count = client.names.len() + scheduled.names.len();
        outln!("  {count} batch progress queues lepus.batch.<id> ({})", whose.join(" and "));
        clean &= scheduled.clean && client.clean;
        if !self.batch_records_existed {
            self.remove_batch_records().await;
        }
        clean
    }

    /// Deletes the queues of `names` that exist.
    async fn delete(&self, names: &[String]) -> Deleted {
        let mut deleted = Deleted { names: Vec::new(), messages: 0, clean: true };
        for name in names {
            match queues::delete_if_present(self.client.broker(), name, QueueDeleteOptions::default()).await {
                Ok(Some(messages)) => {
                    deleted.names.push(name.clone());
                    deleted.messages += messages;
                }
                Ok(None) => {}
                Err(e) => {
                    errln!("lepus-demo: {e:#}; delete it with `rabbitmqctl delete_queue {name}`");
                    deleted.clean = false;
                }
            }
        }
        deleted
    }

    /// Deletes `lepus.batches`, which this run's workers created, unless something else uses it
    /// by now or it holds records.
    async fn remove_batch_records(&self) {
        let options = QueueDeleteOptions { if_unused: true, if_empty: true, ..QueueDeleteOptions::default() };
        match queues::delete_if_present(self.client.broker(), BATCH_RECORDS_QUEUE, options).await {
            Ok(Some(_)) => outln!("  Deleted {BATCH_RECORDS_QUEUE}, which the demo's workers had created."),
            Ok(None) => {}
            Err(e) => outln!("  Left {BATCH_RECORDS_QUEUE} in place: it is in use or not empty ({e:#})."),
        }
    }
}

/// What [`Leftovers::delete`] did.
#[derive(Debug)]
struct Deleted {
    names: Vec<String>,
    messages: u32,
    clean: bool,
}

/// Closes the client, which deletes its reply queue; `true` if that worked.
async fn close_client(client: &Client) -> bool {
    match client.close().await {
        Ok(()) => true,
        Err(e) => {
            errln!("lepus-demo: cannot close the client and delete its reply queue: {e}");
            false
        }
    }
}
