//! A worker's gate of one rate key: the one consumer of the key's token bucket in this process
//! (prefetch 1, manual acks), handing each token to the job that has waited longest.
//!
//! A job asks for its turn by sending a one-shot sender ([`Gate::turn`]); the gate takes the
//! next live asker, then (if it has no start left in hand) the next token, acks it, and hands
//! one of the starts the token is worth (its body, `Rate::token_weight`) to each asker in turn. A
//! job that stopped waiting (its wait bound passed) is skipped, and the start goes to the next.
//! So this process holds at most two tokens' worth of starts it has not used (the token
//! prefetched, the one in hand), and a start is never handed to two jobs: a token is acked
//! before any of its starts is handed over (a lost ack gives it back to the bucket, not to a
//! job).

use futures_lite::StreamExt;
use lepus::internal::topology;
use lepus::lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lepus::lapin::types::FieldTable;
use lepus::lapin::{Channel, Consumer};
use lepus::{Broker, Rate};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The asking side of a gate.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    askers: mpsc::UnboundedSender<oneshot::Sender<()>>,
}

impl Gate {
    /// Starts the gate of `key` on `broker`, until `stop`.
    pub(crate) fn start(broker: Broker, key: String, rate: Rate, stop: CancellationToken) -> Self {
        let (askers, waiting) = mpsc::unbounded_channel();
        tokio::spawn(serve(broker, key, rate, waiting, stop));
        Self { askers }
    }

    /// A receiver that completes when this job may start (it has a token); dropped, the job
    /// gives up its place.
    pub(crate) fn turn(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        // A gate that has stopped drops the sender: the job waits out its bound, then goes back.
        drop(self.askers.send(tx));
        rx
    }
}

/// Hands tokens to askers, opening the consumer again (by the reconnect policy) after a loss.
async fn serve(
    broker: Broker,
    key: String,
    rate: Rate,
    mut waiting: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    stop: CancellationToken,
) {
    let mut kept = 0;
    loop {
        let open = || open(&broker, &key, &rate);
        let Some((channel, mut consumer)) = lepus::internal::reconnect("rate gate", &stop, open).await else { return };
        let ended = hand_out(&mut consumer, &mut waiting, (&mut kept, rate.token_weight()), &stop).await;
        drop(channel.close(200, "rate gate".into()).await);
        match ended {
            Ok(()) => return,
            Err(why) => tracing::warn!(rate_key = key, error = why, "rate gate lost its consumer; opening it again"),
        }
    }
}

/// A channel with prefetch 1 consuming the token bucket of `key` (declared first).
async fn open(broker: &Broker, key: &str, rate: &Rate) -> lepus::Result<(Channel, Consumer)> {
    let channel = broker.channel().await?;
    channel
        .basic_qos(1, BasicQosOptions { global: false })
        .await
        .map_err(|source| lepus::Error::Amqp { operation: "basic.qos", source })?;
    topology::declare_rate_tokens(&channel, key, rate).await?;
    let queue = topology::rate_token_queue(key);
    let consumer = channel
        .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .map_err(|source| lepus::Error::Amqp { operation: "basic.consume", source })?;
    Ok((channel, consumer))
}

/// Gives each live asker, in order, one token; `Ok` when told to stop, `Err` when the consumer
/// is lost.
async fn hand_out(
    consumer: &mut Consumer,
    waiting: &mut mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    (kept, weight): (&mut u32, u32),
    stop: &CancellationToken,
) -> Result<(), String> {
    loop {
        let mut asker = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            asker = waiting.recv() => match asker {
                Some(asker) => asker,
                None => return Ok(()),
            },
        };
        if asker.is_closed() {
            continue;
        }
        if *kept == 0 {
            let token = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                // The asker gave up waiting: ask the next one, no token taken.
                () = asker.closed() => continue,
                token = consumer.next() => token,
            };
            match token {
                Some(Ok(token)) => {
                    token
                        .acker
                        .ack(BasicAckOptions::default())
                        .await
                        .map_err(|e| format!("cannot ack a token: {e}"))?;
                    // The starts it is worth (an empty or odd body: one; never more than the rate's).
                    let worth = std::str::from_utf8(&token.data).ok().and_then(|n| n.parse().ok());
                    *kept = worth.unwrap_or(1).clamp(1, weight);
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the token consumer ended".into()),
            }
        }
        if asker.send(()).is_ok() {
            *kept -= 1;
        }
    }
}
