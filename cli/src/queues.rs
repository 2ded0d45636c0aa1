//! `lepus queues`: each Lepus queue with its ready and unacked messages, consumers and dead
//! letters. Which queues: those the running workers consume (asked through remote control) and
//! those named. Counts come from passive declares (AMQP), which tell ready messages and
//! consumers; unacked counts come from RabbitMQ's management API when it answers.

use crate::output::Table;
use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use lepus::Broker;
use lepus::control::{Mailbox, Nodes};
use lepus::internal::topology;
use lepus::lapin::uri::AMQPUri;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::time::Duration;

pub(crate) async fn queues(
    broker: &Broker,
    url: &str,
    named: Vec<String>,
    management: Option<String>,
    timeout: Duration,
    json: bool,
) -> Result<(), String> {
    let mut names: BTreeSet<String> = named.into_iter().collect();
    let mut mailbox = Mailbox::open(broker).await.map_err(|e| e.to_string())?;
    let consumed = mailbox.call("active_queues", Map::new(), Nodes::All, timeout, None).await;
    mailbox.close().await;
    for (_, queues) in consumed.map_err(|e| e.to_string())? {
        names.extend(queues.as_array().into_iter().flatten().filter_map(|q| q["name"].as_str()).map(str::to_owned));
    }
    let management = Management::new(url, management);
    let mut table = Table::new(&["queue", "ready", "unacked", "consumers", "dead_letters"]);
    for name in &names {
        let state = topology::inspect_queue(broker, name).await.map_err(|e| e.to_string())?;
        let dead =
            topology::inspect_queue(broker, &topology::dead_letter_queue(name)).await.map_err(|e| e.to_string())?;
        let Some(state) = state else {
            table.row(vec![Value::from(name.as_str()), Value::Null, Value::Null, Value::Null, Value::Null]);
            continue;
        };
        table.row(vec![
            Value::from(name.as_str()),
            Value::from(state.messages),
            management.unacked(name).map_or(Value::Null, Value::from),
            Value::from(state.consumers),
            dead.map_or(Value::Null, |d| Value::from(d.messages)),
        ]);
    }
    table.print(json);
    if names.is_empty() && !json {
        eprintln!("no worker answered and no --queue was named: no queue to show");
    }
    Ok(())
}

/// RabbitMQ's management API, if it answers.
struct Management {
    base: String,
    vhost: String,
    user: String,
    password: String,
}

impl Management {
    /// From the (first) broker URL's host and credentials, unless `base` is given.
    fn new(url: &str, base: Option<String>) -> Option<Self> {
        let uri: AMQPUri = url.split(',').next()?.trim().parse().ok()?;
        let base = base.unwrap_or_else(|| format!("http://{}:15672", uri.authority.host));
        Some(Self {
            base: base.trim_end_matches('/').to_owned(),
            vhost: uri.vhost.clone(),
            user: uri.authority.userinfo.username.clone(),
            password: uri.authority.userinfo.password.clone(),
        })
    }
}

trait Unacked {
    fn unacked(&self, queue: &str) -> Option<u64>;
}

impl Unacked for Option<Management> {
    /// The queue's unacked messages, from `GET /api/queues/<vhost>/<name>`.
    fn unacked(&self, queue: &str) -> Option<u64> {
        let management = self.as_ref()?;
        let encode = |s: &str| {
            s.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        };
        let url = format!("{}/api/queues/{}/{}", management.base, encode(&management.vhost), encode(queue));
        let agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(2))).build().new_agent();
        let credentials = BASE64_STANDARD.encode(format!("{}:{}", management.user, management.password));
        let mut response = agent.get(&url).header("Authorization", &format!("Basic {credentials}")).call().ok()?;
        let body: Value = serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()?;
        body["messages_unacknowledged"].as_u64()
    }
}
