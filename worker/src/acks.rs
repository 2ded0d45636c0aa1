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
        let tags: Vec<(u64, bool)> = round.iter().map(|request| (request.tag, request.requeue)).collect();
        let plan = plan(&mut self.ledger, &tags);
        let mut answers: Vec<Option<oneshot::Sender<bool>>> =
            round.into_iter().map(|request| Some(request.done)).collect();
        let mut answer = |requests: &[usize]| -> Vec<oneshot::Sender<bool>> {
            requests.iter().filter_map(|&i| answers.get_mut(i).and_then(Option::take)).collect()
        };
        let mut sending = JoinSet::new();
        for (command, requests) in plan {
            let done = answer(&requests);
            match command {
                // One by one, before any ack that could cover them.
                Command::Nack(tag) => {
                    let sent = send(
                        self.channel.basic_nack(tag, BasicNackOptions { requeue: true, multiple: false }),
                        self.timeout,
                    )
                    .await;
                    done.into_iter().for_each(|done| tell(done, sent));
                    if !sent {
                        return false;
                    }
                }
                Command::Ack { tag, multiple } => {
                    let (channel, timeout) = (self.channel.clone(), self.timeout);
                    sending.spawn(async move {
                        let sent = send(channel.basic_ack(tag, BasicAckOptions { multiple }), timeout).await;
                        done.into_iter().for_each(|done| tell(done, sent));
                        sent
                    });
                }
            }
        }
        let mut all_sent = true;
        while let Some(sent) = sending.join_next().await {
            all_sent &= sent.unwrap_or(false);
        }
        all_sent
    }
}

/// A command to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// `basic.nack` with requeue, for one tag.
    Nack(u64),
    /// `basic.ack`, for `tag` alone or (`multiple`) every unsettled tag up to it.
    Ack { tag: u64, multiple: bool },
}

/// The commands that settle one round of requests (`(tag, requeue)`), in the order to send them,
/// each with the indices of the requests it answers: the nacks first, then one multiple ack for
/// the run of tags next to the settled prefix, then single acks above a gap. Updates the ledger,
/// and turns coalescing off (`None`) once too many tags wait above a gap.
fn plan(ledger: &mut Option<Ledger>, round: &[(u64, bool)]) -> Vec<(Command, Vec<usize>)> {
    let mut commands = Vec::new();
    let mut acks = Vec::new();
    for (index, &(tag, requeue)) in round.iter().enumerate() {
        if requeue {
            if let Some(ledger) = ledger.as_mut() {
                ledger.settled(tag);
            }
            commands.push((Command::Nack(tag), vec![index]));
        } else {
            acks.push((tag, index));
        }
    }
    acks.sort_unstable();
    let mut acks = acks.into_iter().peekable();
    if let Some(ledger) = ledger.as_mut() {
        // The run: tags next to the settled prefix, with settled ones from earlier rounds in between.
        let (mut run, mut last) = (Vec::new(), 0);
        loop {
            let next = ledger.through + 1;
            if ledger.ahead.first() == Some(&next) {
                ledger.settled(next);
            } else if let Some((_, index)) = acks.next_if(|(tag, _)| *tag == next) {
                run.push(index);
                (ledger.through, last) = (next, next);
            } else {
                break;
            }
        }
        if !run.is_empty() {
            // Tags below `last` settled earlier are no longer outstanding: this acks the run.
            commands.push((Command::Ack { tag: last, multiple: run.len() > 1 }, run));
        }
    }
    for (tag, index) in acks {
        if let Some(ledger) = ledger.as_mut() {
            ledger.settled(tag);
        }
        commands.push((Command::Ack { tag, multiple: false }, vec![index]));
    }
    if ledger.as_ref().is_some_and(|ledger| ledger.ahead.len() > MAX_AHEAD) {
        tracing::info!("a long-running job holds back ack coalescing on this channel; acking one by one from now");
        *ledger = None;
    }
    commands
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
    use super::{Command, Ledger, MAX_AHEAD, plan};

    fn acks(tags: &[u64]) -> Vec<(u64, bool)> {
        tags.iter().map(|tag| (*tag, false)).collect()
    }

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

    #[test]
    fn a_run_in_any_order_is_one_multiple_ack_answering_every_request() {
        let mut ledger = Some(Ledger::default());
        let plan = plan(&mut ledger, &acks(&[3, 1, 2]));
        assert_eq!(plan, [(Command::Ack { tag: 3, multiple: true }, vec![1, 2, 0])]);
        let lone = super::plan(&mut ledger, &acks(&[4]));
        assert_eq!(lone, [(Command::Ack { tag: 4, multiple: false }, vec![0])], "a lone ack goes out at once");
    }

    #[test]
    fn a_running_job_is_never_covered() {
        // Tag 1 still runs: 2 and 3 are acked one by one, never with `multiple`.
        let mut ledger = Some(Ledger::default());
        let plan = plan(&mut ledger, &acks(&[2, 3]));
        assert_eq!(
            plan,
            [(Command::Ack { tag: 2, multiple: false }, vec![0]), (Command::Ack { tag: 3, multiple: false }, vec![1])]
        );
        // Tag 1 ends: acked alone (2 and 3 are acked already), and the prefix moves past 3.
        let later = super::plan(&mut ledger, &acks(&[1, 5]));
        assert_eq!(
            later,
            [(Command::Ack { tag: 1, multiple: false }, vec![0]), (Command::Ack { tag: 5, multiple: false }, vec![1])]
        );
        let next = super::plan(&mut ledger, &acks(&[4]));
        assert_eq!(next, [(Command::Ack { tag: 4, multiple: false }, vec![0])]);
        assert_eq!(ledger.map(|l| l.through), Some(5));
    }

    #[test]
    fn nacks_go_first_and_count_as_settled() {
        let mut ledger = Some(Ledger::default());
        let plan = plan(&mut ledger, &[(2, false), (1, true), (3, false)]);
        assert_eq!(plan, [(Command::Nack(1), vec![1]), (Command::Ack { tag: 3, multiple: true }, vec![0, 2])]);
    }

    #[test]
    fn too_many_tags_above_a_gap_turn_coalescing_off() {
        let mut ledger = Some(Ledger::default());
        let ahead: Vec<u64> = (2..=(MAX_AHEAD as u64 + 2)).collect();
        let plan = plan(&mut ledger, &acks(&ahead));
        assert!(plan.iter().all(|(command, _)| matches!(command, Command::Ack { multiple: false, .. })));
        assert!(ledger.is_none(), "coalescing is off");
        let after = super::plan(&mut ledger, &acks(&[1, 70_000]));
        assert_eq!(after.len(), 2, "every ack on its own from now: {after:?}");
    }
}
