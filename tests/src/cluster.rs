//! [`Cluster`]: a three-node RabbitMQ cluster of a test's own, started by `deploy/cluster/cluster
//! up` on free ports in a directory of its own, beside the default broker; its nodes are stopped
//! and their data removed (`down`) when it is dropped, whether the test passed or not. Starting
//! one takes about 25 s on two cores.

use crate::http::free_address;
use crate::queues::unique_name;
use lepus::{Broker, Connector, Tls, UrlOrder};
use std::path::PathBuf;
use std::process::{Command, Output};

/// A running three-node cluster; nodes are numbered 0, 1 and 2.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    prefix: String,
    ports: Vec<u16>,
    dist_ports: Vec<u16>,
    urls: Vec<String>,
}

impl Cluster {
    /// Starts the cluster; panics with the script's output if it cannot.
    #[must_use]
    pub fn up() -> Self {
        let name = unique_name("cluster");
        let ports = (0..3).map(|_| free_address().port()).collect();
        let dist_ports = (0..3).map(|_| free_address().port()).collect();
        let dir = std::env::temp_dir().join("lepus-clusters").join(&name);
        let mut cluster = Self { dir, prefix: name, ports, dist_ports, urls: Vec::new() };
        // Taken down on drop, also when `up` fails halfway.
        let output = cluster.script("up");
        assert!(output.status.success(), "cluster up failed: {}", String::from_utf8_lossy(&output.stderr));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let listed = stdout.lines().last().expect("cluster up prints the URLs");
        cluster.urls = listed.split(',').map(str::to_owned).collect();
        assert_eq!(cluster.urls.len(), 3, "{listed}");
        cluster
    }

    /// Node `n`'s name, `t-cluster-…-<n+1>@localhost`.
    #[must_use]
    pub fn node(&self, n: usize) -> String {
        format!("{}-{}@localhost", self.prefix, n + 1)
    }

    /// Node `n`'s AMQP URL.
    #[must_use]
    pub fn url(&self, n: usize) -> &str {
        &self.urls[n]
    }

    /// All three URLs, node `n`'s first, as `LEPUS_AMQP_URL` takes them: with
    /// `LEPUS_AMQP_URL_ORDER=listed` a process connects to node `n` and fails over to the others.
    #[must_use]
    pub fn urls_from(&self, n: usize) -> String {
        (0..3).map(|i| self.urls[(n + i) % 3].as_str()).collect::<Vec<_>>().join(",")
    }

    /// The environment that puts a Lepus process on node `n`, failing over to the others.
    #[must_use]
    pub fn env(&self, n: usize) -> Vec<(&'static str, String)> {
        vec![("LEPUS_AMQP_URL", self.urls_from(n)), ("LEPUS_AMQP_URL_ORDER", "listed".to_owned())]
    }

    /// A pool of one connection, on node `n` and failing over to the others in turn.
    pub async fn broker(&self, n: usize) -> Broker {
        let connector = Connector::new(&self.urls_from(n), &Tls::default(), "lepus-tests")
            .expect("the cluster's URLs parse")
            .order(UrlOrder::Listed);
        Broker::connect_through(connector, 1).await.expect("the cluster answers")
    }

    /// Stops node `n`'s RabbitMQ application (`stop_app`): its clients lose their connections
    /// and its queue members go away, as if the node were lost.
    pub fn stop(&self, n: usize) {
        self.ctl(n, &["stop_app"]);
    }

    /// Starts node `n`'s application again and waits until it runs.
    pub fn start(&self, n: usize) {
        self.ctl(n, &["start_app"]);
        self.ctl(n, &["await_startup", "--timeout", "60"]);
    }

    /// The node (0, 1 or 2) that leads quorum queue `queue`, asked of node `via`.
    #[must_use]
    pub fn leader_of(&self, queue: &str, via: usize) -> usize {
        let leader = self.queue_field(queue, "leader", via);
        (0..3).find(|n| self.node(*n) == leader).unwrap_or_else(|| panic!("{queue} is led by {leader}"))
    }

    /// The nodes that hold a member of quorum queue `queue`, asked of node `via`.
    #[must_use]
    pub fn members_of(&self, queue: &str, via: usize) -> Vec<String> {
        let members = self.queue_field(queue, "members", via);
        let mut members: Vec<String> = members
            .trim_matches(['[', ']'])
            .split(',')
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .collect();
        members.sort();
        members
    }

    /// The node of each consumer of `queue` (where its channel is, so where its process is
    /// connected), sorted, asked of node `via`.
    #[must_use]
    pub fn consumer_nodes(&self, queue: &str, via: usize) -> Vec<usize> {
        let listing = self.ctl(via, &["list_consumers", "-q", "--no-table-headers", "queue_name", "channel_pid"]);
        let mut nodes: Vec<usize> = listing
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .filter(|(name, _)| *name == queue)
            .filter_map(|(_, pid)| {
                (0..3).find(|n| pid.trim_start_matches('<').starts_with(&format!("{}.", self.node(*n))))
            })
            .collect();
        nodes.sort_unstable();
        nodes
    }

    /// Runs `rabbitmqctl -n <node n> args` and returns its output; panics if it fails.
    pub fn ctl(&self, n: usize, args: &[&str]) -> String {
        let output = Command::new("rabbitmqctl").arg("-n").arg(self.node(n)).args(args).output().expect("rabbitmqctl");
        assert!(
            output.status.success(),
            "rabbitmqctl -n {} {args:?} failed: {}",
            self.node(n),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn queue_field(&self, queue: &str, field: &str, via: usize) -> String {
        let listing = self.ctl(via, &["list_queues", "-q", "--no-table-headers", "name", field]);
        listing
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .find(|(name, _)| *name == queue)
            .map(|(_, value)| value.trim().to_owned())
            .unwrap_or_else(|| panic!("no queue {queue} on the cluster"))
    }

    fn script(&self, command: &str) -> Output {
        let join = |ports: &[u16]| ports.iter().map(u16::to_string).collect::<Vec<_>>().join(" ");
        Command::new(script_path())
            .arg(command)
            .env("LEPUS_CLUSTER_DIR", &self.dir)
            .env("LEPUS_CLUSTER_PREFIX", &self.prefix)
            .env("LEPUS_CLUSTER_PORTS", join(&self.ports))
            .env("LEPUS_CLUSTER_DIST_PORTS", join(&self.dist_ports))
            .output()
            .unwrap_or_else(|e| panic!("deploy/cluster/cluster {command} cannot start: {e}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let output = self.script("down");
        if !output.status.success() {
            eprintln!("cluster down failed: {}", String::from_utf8_lossy(&output.stderr));
        }
    }
}

/// `deploy/cluster/cluster` of this checkout.
fn script_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/cluster/cluster")
}
