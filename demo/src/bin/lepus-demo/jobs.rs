//! Sending the planned jobs with many in flight at once, and recording each one's result.

use crate::plan::Planned;
use crate::tally::SharedTally;
use lepus::protocol::ResultMessage;
use lepus::{Client, Job, Request};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Where and how to send the jobs.
#[derive(Debug, Clone)]
pub(crate) struct Sender {
    pub(crate) client: Client,
    pub(crate) queue: String,
    /// Jobs submitted and not yet answered, at most.
    pub(crate) in_flight: usize,
    /// How long one job's result may take.
    pub(crate) timeout: Duration,
}

impl Sender {
    /// Sends every job and waits for all results, counting them in `tally` as they arrive.
    /// Dropping the future (on Ctrl-C) abandons the jobs still in flight.
    pub(crate) async fn run_all(self, jobs: Vec<Planned>, tally: SharedTally) {
        let permits = Arc::new(Semaphore::new(self.in_flight));
        let sender = Arc::new(self);
        let mut running = JoinSet::new();
        for job in jobs {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { break };
            let sender = Arc::clone(&sender);
            let tally = tally.clone();
            running.spawn(async move {
                let outcome = sender.send(&job).await;
                tally.record(&job, outcome);
                drop(permit);
            });
            while running.try_join_next().is_some() {}
        }
        while running.join_next().await.is_some() {}
    }

    async fn send(&self, job: &Planned) -> lepus::Result<ResultMessage> {
        match job.clone() {
            Planned::Add(job) => self.submit_and_wait(job).await,
            Planned::Echo(job) => self.submit_and_wait(job).await,
            Planned::Sleep(job) => self.submit_and_wait(job).await,
            Planned::Fail(job) => self.submit_and_wait(job).await,
        }
    }

    async fn submit_and_wait<J: Job>(&self, job: J) -> lepus::Result<ResultMessage> {
        let pending = self.client.submit(Request::new(job).queue(self.queue.as_str())).await?;
        pending.result_message(self.timeout).await
    }
}
