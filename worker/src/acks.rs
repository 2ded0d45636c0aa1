//! [`Acks`]: every ack and nack of one consuming channel, sent by one task that coalesces acks.
//!
//! Acking each delivery on its own costs a frame, a trip through lapin's I/O loop and a broker
//! command per job. So deliveries are settled through one task per channel. Each round it takes
//! whatever has queued up since the last one and:
//!
//! 1. sends the nacks (requeue), one by one, before any ack that could cover them;
//! 2. sends one `basic.ack` with `multiple` for the longest run of tags, from the lowest
//!    unsettled one up, whose deliveries are all settled, and at the same time one `basic.ack`
//!    each for the tags above a gap (a job still running);
//! 3. answers every caller once its ack is out.
//!
//! Nothing waits for a batch to fill: a lone ack goes out at once. A multiple ack never covers a
//! tag the task has not been told to settle: RabbitMQ numbers a channel's deliveries 1, 2, 3…, so
//! a missing tag is a job still running (or a delivery not handed out yet). Once a send fails the
//! channel is gone and every later call answers `false` (the broker redelivers those messages).

use lepus::lapin::Channel;
use lepus::lapin::options::{BasicAckOptions, BasicNackOptions};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// Settled tags above a gap that the task remembers; past this (a job running for ages on a busy
/// channel) it stops coalescing on this channel rather than grow.
const MAX_AHEAD: usize = 65_536;

/// A handle to the settling task of one channel. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Acks {
    requests: mpsc::UnboundedSender<Request>,
}

struct Request {
    tag: u64,
    requeue: bool,
    done: oneshot::Sender<bool>,
}

impl Acks {
    /// Starts the settling task of `channel`; it ends when the last handle is dropped.
    pub(crate) fn start(channel: Channel, timeout: Duration) -> Self {
        let (requests, received) = mpsc::unbounded_channel();
        tokio::spawn(Settler { channel, timeout, ledger: Some(Ledger::default()) }.run(received));
        Self { requests }
    }

    /// Acks delivery `tag`; true once the ack has gone to the broker.
    pub(crate) async fn ack(&self, tag: u64) -> bool {
        self.settle(tag, false).await
    }

    /// Nacks delivery `tag` back to its queue; true once the nack has gone to the broker.
    pub(crate) async fn requeue(&self, tag: u64) -> bool {
        self.settle(tag, true).await
    }

    async fn settle(&self, tag: u64, requeue: bool) -> bool {
        let (done, answer) = oneshot::channel();
        self.requests.send(Request { tag, requeue, done }).is_ok() && answer.await.unwrap_or(false)
    }
}

/// Which tags of the channel are settled: all up to `through`, and those in `ahead`.
#[derive(Debug, Default)]
struct Ledger {
    through: u64,
    ahead: BTreeSet<u64>,
}

impl Ledger {
    fn settled(&mut self, tag: u64) {
        if tag > self.through {
            self.ahead.insert(tag);
        }
        while self.ahead.first() == Some(&(self.through + 1)) {
            self.ahead.pop_first();
            self.through += 1;
        }
    }
}

struct Settler {
    channel: Channel,
    timeout: Duration,
    /// `None` once coalescing is off for this channel (see [`MAX_AHEAD`]).
    ledger: Option<Ledger>,
}

impl Settler {
    async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>) {
        let mut broken = false;
        while let Some(first) = requests.recv().await {
            let mut round = vec![first];
            while let Ok(request) = requests.try_recv() {
                round.push(request);
            }
            if broken {
                round.into_iter().for_each(|request| tell(request.done, false));
            } else {
                broken = !self.settle(round).await;
            }
        }
    }

    /// Settles one round of requests; false if the channel failed.
    async fn settle(&mut self, round: Vec<Request>) -> bool {
        let (nacks, mut acks): (Vec<_>, Vec<_>) = round.into_iter().partition(|request| request.requeue);
        for Request { tag, done, .. } in nacks {
            let nack = self.channel.basic_nack(tag, BasicNackOptions { requeue: true, multiple: false });
            let sent = send(nack, self.timeout).await;
            if let Some(ledger) = &mut self.ledger {
                ledger.settled(tag);
            }
            tell(done, sent);
            if !sent {
                return false;
            }
        }
        acks.sort_unstable_by_key(|request| request.tag);
        let mut sending = JoinSet::new();
        let mut ack = |tag, multiple, answers: Vec<oneshot::Sender<bool>>| {
            let (channel, timeout) = (self.channel.clone(), self.timeout);
            sending.spawn(async move {
                let sent = send(channel.basic_ack(tag, BasicAckOptions { multiple }), timeout).await;
                answers.into_iter().for_each(|done| tell(done, sent));
                sent
            });
        };
        let mut acks = acks.into_iter().peekable();
        if let Some(ledger) = &mut self.ledger {
            // The run: tags next to the settled prefix, with settled ones from earlier rounds in between.
            let (mut run, mut last) = (Vec::new(), 0);
            loop {
                let next = ledger.through + 1;
                if ledger.ahead.first() == Some(&next) {
                    ledger.settled(next);
                } else if let Some(request) = acks.next_if(|request| request.tag == next) {
                    run.push(request.done);
                    (ledger.through, last) = (next, next);
                } else {
                    break;
                }
            }
            if !run.is_empty() {
                // Tags below `last` settled earlier are no longer outstanding: this acks the run.
                ack(last, run.len() > 1, run);
            }
        }
        for Request { tag, done, .. } in acks {
            if let Some(ledger) = &mut self.ledger {
                ledger.settled(tag);
            }
            ack(tag, false, vec![done]);
        }
        if self.ledger.as_ref().is_some_and(|ledger| ledger.ahead.len() > MAX_AHEAD) {
            tracing::info!("a long-running job holds back ack coalescing on this channel; acking one by one from now");
            self.ledger = None;
        }
        let mut all_sent = true;
        while let Some(sent) = sending.join_next().await {
            all_sent &= sent.unwrap_or(false);
        }
        all_sent
    }
}

async fn send(sending: impl Future<Output = lepus::lapin::Result<()>>, timeout: Duration) -> bool {
    matches!(tokio::time::timeout(timeout, sending).await, Ok(Ok(())))
}

/// Answers a caller; one that gave up waiting does not mind.
fn tell(done: oneshot::Sender<bool>, sent: bool) {
    let _ = done.send(sent);
}

#[cfg(test)]
mod tests {
    use super::Ledger;

    #[test]
    fn the_ledger_advances_over_every_contiguous_settled_tag() {
        let mut ledger = Ledger::default();
        for tag in [2, 3, 5] {
            ledger.settled(tag);
        }
        assert_eq!(ledger.through, 0, "tag 1 is still running");
        ledger.settled(1);
        assert_eq!(ledger.through, 3);
        assert_eq!(ledger.ahead.iter().copied().collect::<Vec<_>>(), vec![5]);
        ledger.settled(4);
        assert_eq!(ledger.through, 5);
        assert!(ledger.ahead.is_empty());
    }
}
