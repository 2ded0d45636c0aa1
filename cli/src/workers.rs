//! `lepus status`, `lepus inspect` and `lepus revoke`: Celery's remote control, asked through a
//! mailbox whose reply queue goes when the command ends. Python Celery workers answer too.

use crate::args::Inspection;
use crate::output::{Table, out, print_json};
use lepus::Broker;
use lepus::control::{Mailbox, Nodes};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// Every worker that answers a ping, with what `stats` and `active_queues` tell of it.
pub(crate) async fn status(broker: &Broker, timeout: Duration, json: bool) -> Result<(), String> {
    let mut mailbox = Mailbox::open(broker).await.map_err(|e| e.to_string())?;
    let pings = mailbox.call("ping", Map::new(), Nodes::All, timeout, None).await.map_err(|e| e.to_string())?;
    let mut nodes: Vec<String> = pings.into_iter().map(|(node, _)| node).collect();
    nodes.sort();
    let stats = by_node(mailbox.call("stats", Map::new(), Nodes::Named(&nodes), timeout, Some(nodes.len())).await);
    let queues =
        by_node(mailbox.call("active_queues", Map::new(), Nodes::Named(&nodes), timeout, Some(nodes.len())).await);
    let active = by_node(mailbox.call("active", Map::new(), Nodes::Named(&nodes), timeout, Some(nodes.len())).await);
    mailbox.close().await;
    let mut table = Table::new(&["name", "queues", "concurrency", "active", "processed", "uptime"]);
    for node in &nodes {
        let stats = stats.get(node).cloned().unwrap_or_default();
        let processed: u64 = stats["total"].as_object().map_or(0, |t| t.values().filter_map(Value::as_u64).sum());
        let names: Vec<Value> = queues
            .get(node)
            .and_then(Value::as_array)
            .map(|qs| qs.iter().map(|q| q["name"].clone()).collect())
            .unwrap_or_default();
        let uptime = stats["uptime"]
            .as_u64()
            .map(|s| Value::from(humantime::format_duration(Duration::from_secs(s)).to_string()));
        table.row(vec![
            Value::from(node.as_str()),
            Value::from(names),
            stats["pool"]["max-concurrency"].clone(),
            Value::from(active.get(node).and_then(Value::as_array).map_or(0, Vec::len)),
            Value::from(processed),
            uptime.unwrap_or(Value::Null),
        ]);
    }
    table.print(json);
    if nodes.is_empty() && !json {
        eprintln!("no worker answered within {timeout:?}");
    }
    Ok(())
}

/// `active`, `registered` or `stats` of every worker, or of `worker`.
pub(crate) async fn inspect(
    broker: &Broker,
    what: Inspection,
    worker: Option<String>,
    timeout: Duration,
    json: bool,
) -> Result<(), String> {
    let method = match what {
        Inspection::Active => "active",
        Inspection::Registered => "registered",
        Inspection::Stats => "stats",
    };
    let named: Vec<String> = worker.into_iter().collect();
    let nodes = if named.is_empty() { Nodes::All } else { Nodes::Named(&named) };
    let limit = (!named.is_empty()).then_some(named.len());
    let mut mailbox = Mailbox::open(broker).await.map_err(|e| e.to_string())?;
    let replies = mailbox.call(method, Map::new(), nodes, timeout, limit).await.map_err(|e| e.to_string());
    mailbox.close().await;
    let mut replies = replies?;
    replies.sort_by(|a, b| a.0.cmp(&b.0));
    if replies.is_empty() {
        return Err(format!("no worker answered within {timeout:?}"));
    }
    if json {
        print_json(&Value::Object(replies.into_iter().collect()));
        return Ok(());
    }
    match what {
        Inspection::Active => {
            let mut table = Table::new(&["worker", "id", "job", "args", "kwargs", "started"]);
            for (node, jobs) in &replies {
                for job in jobs.as_array().into_iter().flatten() {
                    let started = job["time_start"]
                        .as_f64()
                        .and_then(|t| chrono::DateTime::from_timestamp_millis((t * 1000.0) as i64));
                    table.row(vec![
                        Value::from(node.as_str()),
                        job["id"].clone(),
                        job["name"].clone(),
                        Value::from(job["args"].to_string()),
                        Value::from(job["kwargs"].to_string()),
                        started.map_or(Value::Null, |t| Value::from(t.to_rfc3339())),
                    ]);
                }
            }
            table.print(false);
        }
        Inspection::Registered => {
            let mut table = Table::new(&["worker", "job"]);
            for (node, jobs) in &replies {
                for job in jobs.as_array().into_iter().flatten() {
                    table.row(vec![Value::from(node.as_str()), job.clone()]);
                }
            }
            table.print(false);
        }
        Inspection::Stats => {
            for (node, stats) in &replies {
                out!("{node}");
                out!("{}", serde_json::to_string_pretty(stats).unwrap_or_default());
            }
        }
    }
    Ok(())
}

/// Revokes `ids` on every worker; fails if none answered (the revoke then reached nobody).
pub(crate) async fn revoke(
    broker: &Broker,
    ids: Vec<String>,
    terminate: bool,
    timeout: Duration,
    json: bool,
) -> Result<(), String> {
    let mut mailbox = Mailbox::open(broker).await.map_err(|e| e.to_string())?;
    let mut arguments = Map::new();
    arguments.insert("task_id".into(), Value::from(ids.clone()));
    arguments.insert("terminate".into(), Value::Bool(terminate));
    let replies = mailbox.call("revoke", arguments, Nodes::All, timeout, None).await.map_err(|e| e.to_string());
    mailbox.close().await;
    let replies = replies?;
    if json {
        print_json(&json!({ "revoked": ids, "replies": Value::Object(replies.iter().cloned().collect()) }));
    } else {
        let mut table = Table::new(&["worker", "reply"]);
        for (node, reply) in &replies {
            let text = reply.get("ok").or_else(|| reply.get("error")).cloned().unwrap_or_else(|| reply.clone());
            table.row(vec![Value::from(node.as_str()), text]);
        }
        table.print(false);
    }
    if replies.is_empty() {
        return Err(format!(
            "no worker answered within {timeout:?}: the revoke reached nobody (workers remember revokes; one that starts later learns them from the running ones)"
        ));
    }
    Ok(())
}

fn by_node(replies: lepus::Result<Vec<(String, Value)>>) -> std::collections::HashMap<String, Value> {
    replies.unwrap_or_default().into_iter().collect()
}
