//! [`Node`]: a RabbitMQ node of a test's own, beside the default broker on 5672, with its own
//! node name, distribution port, data and log directories and configuration file; stopped and
//! removed when dropped. Starting one takes about 15 s on two cores. `rabbitmq-server` runs as
//! root and drops to the `rabbitmq` user, which owns the node's directory.

use super::queues::unique_name;
use crate::http::free_address;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A running RabbitMQ node.
#[derive(Debug)]
pub struct Node {
    name: String,
    dir: PathBuf,
}

impl Node {
    /// Starts a node whose `rabbitmq.conf` is `config(dir)`: `dir` is the node's own directory,
    /// where the test may have put files (certificates) before with [`Node::prepare`]. The
    /// configuration must set the node's listeners (`listeners.tcp = none` or other ports), or
    /// it would take the default broker's port. No plugins are enabled.
    #[must_use]
    pub fn start(dir: PathBuf, config: &str) -> Self {
        let name = format!("{}@localhost", unique_name("node"));
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub)).expect("node directories");
        }
        std::fs::write(dir.join("rabbitmq.conf"), config).expect("rabbitmq.conf");
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("enabled_plugins");
        run(Command::new("chown").args(["-R", "rabbitmq:rabbitmq"]).arg(&dir));
        let node = Self { name, dir };
        let dist_port = free_address().port().to_string();
        run(Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &node.name)
            .env("RABBITMQ_DIST_PORT", dist_port)
            .env("RABBITMQ_MNESIA_BASE", node.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", node.dir.join("log"))
            .env("RABBITMQ_PID_FILE", node.dir.join("node.pid"))
            .env("RABBITMQ_CONFIG_FILE", node.dir.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", node.dir.join("enabled_plugins")));
        // `await_startup` fails at once until the node has registered with epmd: ping first.
        let started = Instant::now();
        while !node.ctl_ok(&["ping"]) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "node {} did not come up; see {:?}",
                node.name,
                node.dir
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        assert!(node.ctl_ok(&["await_startup", "--timeout", "60"]), "node {} did not start", node.name);
        node
    }

    /// A fresh directory for a node, owned by the test until [`Node::start`].
    #[must_use]
    pub fn prepare(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join("lepus-nodes").join(unique_name(what));
        std::fs::create_dir_all(&dir).expect("node directory");
        dir
    }

    /// The node's name, `t-node-…@localhost`.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ctl_ok(&self, args: &[&str]) -> bool {
        Command::new("rabbitmqctl").arg("-n").arg(&self.name).args(args).output().is_ok_and(|o| o.status.success())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if !self.ctl_ok(&["stop"]) {
            eprintln!("node {} did not stop cleanly", self.name);
        }
        drop(std::fs::remove_dir_all(&self.dir));
    }
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?} cannot start: {e}"));
    assert!(output.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}
