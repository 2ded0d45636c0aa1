//! Worker processes started by tests: the `lepus-test-worker` binary (the `lepus-worker` command
//! line with the demo jobs and the tests' jobs), logging to a file the test can read.

use super::queues::amqp_url;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running worker process; killed when dropped. Its output goes to a log file.
#[derive(Debug)]
pub struct WorkerProcess {
    child: Child,
    log: PathBuf,
}

impl WorkerProcess {
    /// Starts a worker consuming `queue` with the given extra command-line arguments.
    #[must_use]
    pub fn start(queue: &str, args: &[&str]) -> Self {
        Self::start_with_env(queue, args, &[])
    }

    /// Like [`WorkerProcess::start`], with extra environment variables.
    #[must_use]
    pub fn start_with_env(queue: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(binary());
        command.args(["--queue", queue]).args(args).env("RUST_LOG", "info").envs(env.iter().copied());
        Self::spawn(command, queue)
    }

    /// Starts any worker program (a Python Celery worker, say), with `LEPUS_AMQP_URL` set (unless
    /// the command sets it) and
    /// its output going to a log file named after `label`.
    #[must_use]
    pub fn spawn(mut command: Command, label: &str) -> Self {
        let log_dir = std::env::temp_dir().join("lepus-tests");
        std::fs::create_dir_all(&log_dir).expect("log directory");
        let log = log_dir.join(format!("{label}-{}.log", uuid::Uuid::new_v4().simple()));
        let log_file = std::fs::File::create(&log).expect("log file");
        if !command.get_envs().any(|(key, _)| key == "LEPUS_AMQP_URL") {
            command.env("LEPUS_AMQP_URL", amqp_url());
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file handle"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?} cannot start: {e}"));
        Self { child, log }
    }

    /// The worker's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The worker's node name as results carry it (`host:pid`).
    #[must_use]
    pub fn node_name(&self) -> String {
        let own = lepus::protocol::node_name();
        let host = own.rsplit_once(':').map_or(own, |(host, _)| host);
        format!("{host}:{}", self.pid())
    }

    /// Sends a signal by name (`TERM`, `INT`, …).
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill").args(["-s", signal, &self.pid().to_string()]).status().expect("kill runs");
        assert!(sent.success(), "kill -s {signal} {} failed", self.pid());
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        drop(self.child.kill());
        drop(self.child.wait());
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the worker logged so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// `lepus-test-worker`, built by Cargo next to the test executables.
#[must_use]
pub fn binary() -> PathBuf {
    sibling("lepus-test-worker")
}

/// `lepus-test-scheduler` (the `lepus-scheduler` command line), built next to the tests.
#[must_use]
pub fn scheduler_binary() -> PathBuf {
    sibling("lepus-test-scheduler")
}

fn sibling(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().expect("current exe");
    let profile_dir = test_exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps layout");
    profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}
