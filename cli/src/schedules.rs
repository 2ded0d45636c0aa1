//! `lepus schedules`: the schedules of a scheduler group as its leader announced them, each with
//! its next ticks and its last fire time (kept in the broker), and which replica leads.

use crate::output::{Table, out, print_json};
use chrono::{TimeDelta, Utc};
use lepus::Broker;
use serde_json::{Value, json};

pub(crate) async fn schedules(broker: &Broker, group: &str, json: bool) -> Result<(), String> {
    let Some(leader) = lepus_scheduler::leader(broker, group).await.map_err(|e| e.to_string())? else {
        return Err(format!(
            "no scheduler replica leads group {group:?} (start one with `lepus-scheduler run --group {group}`)"
        ));
    };
    let channel = broker.channel().await.map_err(|e| e.to_string())?;
    let now = Utc::now();
    let mut rows = Vec::new();
    for info in &leader.schedules {
        let schedule = info.schedule().map_err(|e| format!("schedule {}: {e}", info.name))?;
        let next: Vec<Value> =
            schedule.ticks(now, now + TimeDelta::days(3660), 3).iter().map(|t| Value::from(t.to_rfc3339())).collect();
        let last = lepus_scheduler::last_fired(&channel, group, &info.name).await.map_err(|e| e.to_string())?;
        rows.push(json!({
            "schedule": info.name,
            "cron": info.cron,
            "timezone": info.timezone,
            "job": info.job,
            "queue": info.queue,
            "next": next,
            "last_fired": last.map(|t| t.to_rfc3339()),
        }));
    }
    drop(channel.close(200, "read".into()).await);
    if json {
        print_json(&json!({
            "group": group,
            "leader": {"node": leader.node, "since": leader.since.to_rfc3339()},
            "schedules": rows,
        }));
        return Ok(());
    }
    out!("group {group}: led by {} since {}", leader.node, leader.since.to_rfc3339());
    let columns = ["schedule", "cron", "timezone", "job", "queue", "next", "last_fired"];
    let mut table = Table::new(&columns);
    for row in rows {
        table.row(columns.iter().map(|c| row[*c].clone()).collect());
    }
    table.print(false);
    Ok(())
}
