//! Leadership: the replica whose connection holds the exclusive lock queue leads. The lock and
//! every firing share that one connection, so a replica that lost the lock (its connection died)
//! can no longer publish anything. A replica that lost the lead stands back for two standby polls
//! before it asks for the lock again, so that a standby that stayed connected takes over (see
//! `Scheduler::run`).
//!
//! On taking the lead a replica announces itself (its node name and the time) in the group's
//! leader-info queue; [`leader`] reads the lock and that announcement, so operators, tests and the
//! demo learn from the broker who leads, not from a replica's log.

use crate::config::SchedulerConfig;
use crate::health::Health;
use crate::schedule::ScheduleInfo;
use chrono::{DateTime, Utc};
use lepus::internal::Connector;
use lepus::internal::{Outgoing, Transaction, persistent_json, records, topology};
use lepus::lapin::{Channel, Connection};
use lepus::{Broker, ReplyCode};
use metrics::Counter;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// This replica leads while this is alive and [`Leadership::held`].
#[derive(Debug)]
pub(crate) struct Leadership {
    connection: Connection,
}

/// What a replica's connections are watched by: its health, and its count of reconnections.
pub(crate) struct Watch<'a> {
    pub(crate) health: &'a Health,
    pub(crate) reconnects: &'a Counter,
}

/// Who leads a scheduler group, as that replica announced when it took the lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    /// The replica's node name, `host:pid`.
    pub node: String,
    /// When it took the lead.
    pub since: DateTime<Utc>,
    /// The schedules it fires (empty from a replica older than this field).
    #[serde(default)]
    pub schedules: Vec<ScheduleInfo>,
}

impl Leadership {
    /// Waits until this replica takes the lock of its group, then announces it; `None` if `stop`
    /// comes first. It tries on `opened` first if given (a connection already open), then on
    /// connections of its own: between attempts to connect it waits by the reconnect policy, and
    /// while another replica leads it asks again every `standby_poll`.
    pub(crate) async fn acquire(
        config: &SchedulerConfig,
        connector: &Connector,
        mut opened: Option<Connection>,
        stop: &CancellationToken,
        watch: &Watch<'_>,
        schedules: &[ScheduleInfo],
    ) -> Option<Self> {
        let mut standing_by = false;
        loop {
            let connection = match opened.take() {
                Some(connection) => connection,
                None => {
                    let connect = || connector.connect(config.broker_timeout);
                    lepus::internal::reconnect("scheduler", stop, connect).await?
                }
            };
            if watch.health.connect() {
                watch.reconnects.increment(1);
            }
            loop {
                if !connection.status().connected() {
                    watch.health.lost();
                    break;
                }
                match take_lock(&connection, &config.group).await {
                    Ok(()) => {
                        let leadership = Self { connection };
                        match leadership.announce(config, schedules).await {
                            Ok(()) => return Some(leadership),
                            Err(e) => tracing::warn!(error = %e, "took the lock but cannot announce it; trying again"),
                        }
                        leadership.release().await;
                        break;
                    }
                    Err(e) if e.reply_code() == Some(ReplyCode::ResourceLocked) => {
                        if !standing_by {
                            tracing::info!("another replica leads; standing by");
                            standing_by = true;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot take the scheduler lock");
                        break;
                    }
                }
                if wait(stop, config.standby_poll).await {
                    drop(connection.close(200, "stopping".into()).await);
                    return None;
                }
            }
        }
    }

    /// Puts this replica's name in the group's leader-info queue, on the lock's connection.
    async fn announce(&self, config: &SchedulerConfig, schedules: &[ScheduleInfo]) -> lepus::Result<()> {
        let channel = self.channel().await?;
        topology::declare_scheduler_leader_info(&channel, &config.group).await?;
        let node = lepus::internal::node_name().to_owned();
        let leader = Leader { node, since: Utc::now(), schedules: schedules.to_vec() };
        let body = serde_json::to_vec(&leader).map_err(|source| lepus::Error::Serde {
            action: "encode",
            what: "a leader announcement".into(),
            source,
        })?;
        let tx = Transaction::open(channel, config.broker_timeout).await?;
        let queue = topology::scheduler_leader_queue(&config.group);
        tx.publish(Outgoing { exchange: "", routing_key: &queue, body: &body, properties: persistent_json() }).await?;
        tx.commit().await?;
        tracing::info!(group = config.group, "this replica now leads");
        Ok(())
    }

    /// Whether the lock is still held (the connection that holds it is alive).
    pub(crate) fn held(&self) -> bool {
        self.connection.status().connected()
    }

    /// A channel on the leader's connection.
    pub(crate) async fn channel(&self) -> lepus::Result<Channel> {
        self.connection
            .create_channel()
            .await
            .map_err(|source| lepus::Error::Amqp { operation: "channel open", source })
    }

    /// Gives the lock up at once (the exclusive queue goes with the connection).
    pub(crate) async fn release(self) {
        drop(self.connection.close(200, "scheduler stopping".into()).await);
    }
}

/// Who leads scheduler group `group` right now: `None` if no replica holds the lock, or if the one
/// that has just taken it has not announced itself yet (a moment). Read from the broker, so any
/// process can ask.
pub async fn leader(broker: &Broker, group: &str) -> lepus::Result<Option<Leader>> {
    match topology::inspect_queue(broker, &topology::scheduler_lock_queue(group)).await {
        Ok(None) => return Ok(None),
        // Another connection holds the exclusive lock queue: a replica leads.
        Err(e) if e.reply_code() == Some(ReplyCode::ResourceLocked) => {}
        Ok(Some(_)) => {}
        Err(e) => return Err(e),
    }
    let queue = topology::scheduler_leader_queue(group);
    match records::newest(broker, &queue, |leader: &Leader| leader.since).await {
        Err(e) if e.reply_code() == Some(ReplyCode::NotFound) => Ok(None),
        read => read,
    }
}

/// Tries to take the lock of `group` on a channel of its own (a refusal closes the channel).
async fn take_lock(connection: &Connection, group: &str) -> lepus::Result<()> {
    let channel =
        connection.create_channel().await.map_err(|source| lepus::Error::Amqp { operation: "channel open", source })?;
    topology::take_scheduler_lock(&channel, group).await
}

/// Sleeps `period`; returns whether `stop` came first.
/// Sleeps for `period`; `true` if `stop` came first.
pub(crate) async fn wait(stop: &CancellationToken, period: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(period) => false,
    }
}
