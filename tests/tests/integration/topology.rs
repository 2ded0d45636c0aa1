//! The topology declares itself from nothing: on a virtual host where no Lepus or Celery app has
//! ever run, declaring a work queue brings up both delay cascades, and a delayed job goes
//! through Lepus's into the queue.

use lepus::WorkQueue;
use lepus::lapin::options::QueueDeclareOptions;
use lepus::lapin::types::FieldTable;
use lepus::{Client, Request};
use lepus_demo::jobs::Add;
use lepus_tests::{amqp_url, rabbitmqctl, unique_name, wait_until};
use std::time::Duration;

/// A virtual host of its own, deleted (with everything in it) when dropped.
struct Vhost(String);

impl Vhost {
    fn create() -> Self {
        let name = unique_name("vhost");
        rabbitmqctl(&["add_vhost", &name]);
        let vhost = Self(name);
        rabbitmqctl(&["set_permissions", "-p", &vhost.0, "guest", ".*", ".*", ".*"]);
        vhost
    }

    /// The test broker's URL with this virtual host.
    fn url(&self) -> String {
        let base = amqp_url();
        let server = base.rsplit_once('/').map_or(base.as_str(), |(server, _vhost)| server);
        format!("{server}/{}", self.0)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let deleted = std::process::Command::new("rabbitmqctl").args(["delete_vhost", &self.0]).output();
        if !deleted.is_ok_and(|output| output.status.success()) {
            eprintln!("could not delete virtual host {}", self.0);
        }
    }
}

#[tokio::test]
async fn a_fresh_virtual_host_gets_the_whole_topology_and_delayed_jobs_arrive() {
    let vhost = Vhost::create();
    let client = Client::connect(&vhost.url()).await.expect("the fresh virtual host is reachable");
    let queue = WorkQueue::new(unique_name("fresh")).expect("valid name");
    client.declare_queue(&queue).await.expect("the whole topology declares on an empty virtual host");

    let request = Request::new(Add { a: 1, b: 2 }).queue(queue.name());
    client.enqueue_in(request, Duration::from_secs(1)).await.expect("the delayed job is routed and confirmed");

    let channel = client.broker().channel().await.expect("channel");
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let celery_levels = (0..28).map(|level| format!("celery_delayed_{level}"));
    let cascades: Vec<String> = lepus::internal::topology::delay_queues().chain(celery_levels).collect();
    assert_eq!(cascades.len(), 71 + 28);
    for name in &cascades {
        let declared = channel.queue_declare(name.as_str().into(), passive, FieldTable::default()).await;
        assert!(declared.is_ok(), "{name} was not declared: {declared:?}");
    }
    wait_until("the delayed job reaches its queue", Duration::from_secs(15), || async {
        let declared = channel.queue_declare(queue.name().into(), passive, FieldTable::default()).await;
        declared.expect("the work queue exists").message_count() == 1
    })
    .await;
    client.close().await.expect("closed");
}
