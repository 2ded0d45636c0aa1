//! A scheduler replica's metrics. Their names and labels are an operator contract (the README
//! lists them):
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `lepus_scheduler_firings_total` | `schedule` | ticks fired (published and recorded) |
//! | `lepus_scheduler_misfires_total` | `schedule`, `policy` | ticks missed while no replica led, by the policy that handled them |
//! | `lepus_scheduler_leader` | | 1 on the replica that leads, 0 on the others |
//! | `lepus_scheduler_next_fire_timestamp_seconds` | `schedule` | when the leader fires the schedule next (Unix time); 0 on a standby |
//! | `lepus_broker_connected` | | 1 while the replica is connected to the broker |
//! | `lepus_broker_reconnects_total` | | times the replica connected again after losing the broker |
//!
//! Every series exists from the start, for every schedule.

use crate::schedule::Schedule;
use chrono::{DateTime, Utc};
use lepus::internal::endpoint::MetricsRegistry;
use metrics::{Counter, Gauge};
use std::collections::HashMap;

/// The replica's metric handles, one set per schedule.
pub(crate) struct Metrics {
    schedules: HashMap<String, ScheduleSeries>,
    /// 1 while this replica leads.
    pub(crate) leader: Gauge,
    /// 1 while connected.
    pub(crate) connected: Gauge,
    /// Connections made again after a loss.
    pub(crate) reconnects: Counter,
}

struct ScheduleSeries {
    firings: Counter,
    misfires: Counter,
    next_fire: Gauge,
}

impl Metrics {
    pub(crate) fn new(registry: &MetricsRegistry, schedules: &[Schedule]) -> Self {
        let schedules = schedules
            .iter()
            .map(|schedule| {
                let name = schedule.name();
                let series = ScheduleSeries {
                    firings: registry.counter(
                        "lepus_scheduler_firings_total",
                        "Ticks fired (published and recorded), by schedule.",
                        &[("schedule", name)],
                    ),
                    misfires: registry.counter(
                        "lepus_scheduler_misfires_total",
                        "Ticks missed while no replica led, by schedule and the misfire policy that handled them.",
                        &[("schedule", name), ("policy", schedule.misfire_policy().as_str())],
                    ),
                    next_fire: registry.gauge(
                        "lepus_scheduler_next_fire_timestamp_seconds",
                        "When the leader fires the schedule next, in Unix time; 0 on a standby replica.",
                        &[("schedule", name)],
                    ),
                };
                (name.to_owned(), series)
            })
            .collect();
        Self {
            schedules,
            leader: registry.gauge("lepus_scheduler_leader", "1 on the replica that leads its group, else 0.", &[]),
            connected: registry.gauge("lepus_broker_connected", "1 while the replica is connected to the broker.", &[]),
            reconnects: registry.counter(
                "lepus_broker_reconnects_total",
                "Times the replica connected again after losing the broker.",
                &[],
            ),
        }
    }

    /// `schedule` fired a tick.
    pub(crate) fn fired(&self, schedule: &str) {
        self.schedules.get(schedule).inspect(|series| series.firings.increment(1));
    }

    /// `schedule` missed `ticks` ticks.
    pub(crate) fn missed(&self, schedule: &str, ticks: usize) {
        self.schedules.get(schedule).inspect(|series| series.misfires.increment(ticks as u64));
    }

    /// `schedule` fires next at `tick` (`None`: not on this replica).
    pub(crate) fn next_fire(&self, schedule: &str, tick: Option<DateTime<Utc>>) {
        let seconds = tick.map_or(0.0, |tick| tick.timestamp_millis() as f64 / 1000.0);
        self.schedules.get(schedule).inspect(|series| series.next_fire.set(seconds));
    }

    /// This replica leads, or no longer does.
    pub(crate) fn leading(&self, leads: bool) {
        self.leader.set(if leads { 1.0 } else { 0.0 });
        if !leads {
            self.schedules.values().for_each(|series| series.next_fire.set(0.0));
        }
    }
}
