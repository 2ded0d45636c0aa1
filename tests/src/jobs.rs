//! Jobs defined by the tests (not by Lepus), registered by `lepus-test-worker` next to the demo
//! jobs: a user's own typed job, and jobs that fail, panic or crash on purpose. Jobs that record
//! to a file write each line with one `write_all`: jobs running at once append to the same file,
//! and one small append is not interleaved with another.

use lepus::{Job, RetryPolicy};
use lepus_worker::{JobContext, JobError, Worker};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `test.word_count`: counts the words and characters of a text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WordCount {
    /// The text.
    pub text: String,
}

/// What `test.word_count` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WordStats {
    /// Whitespace-separated words.
    pub words: usize,
    /// Unicode scalar values.
    pub chars: usize,
}

impl Job for WordCount {
    const NAME: &'static str = "test.word_count";
    type Output = WordStats;
}

async fn word_count(job: WordCount) -> Result<WordStats, JobError> {
    Ok(WordStats { words: job.text.split_whitespace().count(), chars: job.text.chars().count() })
}

/// `test.flaky`: records each run (attempt number and Unix time in milliseconds) as a line in
/// the file `record`, and fails while the file held fewer than `fail_times` runs before this one.
/// Returns the number of runs. By its type's policy it runs up to 3 times, 1 s then 2 s apart.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Flaky {
    /// Runs that fail before one succeeds.
    pub fail_times: usize,
    /// The file that records the runs.
    pub record: String,
    /// Fail with "do not retry".
    #[serde(default)]
    pub permanent: bool,
    /// Milliseconds to sleep after recording the run, before answering.
    #[serde(default)]
    pub sleep_ms: u64,
}

impl Job for Flaky {
    const NAME: &'static str = "test.flaky";
    type Output = usize;

    fn retry_policy() -> RetryPolicy {
        RetryPolicy::attempts(3).backoff(Duration::from_secs(1), 2.0, Duration::from_secs(30)).jitter(false)
    }
}

/// One recorded run of [`Flaky`]: its attempt number and when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// `JobContext::attempt` of the run.
    pub attempt: u32,
    /// Unix time in milliseconds.
    pub at_ms: u128,
}

impl Flaky {
    /// The runs recorded in `record`.
    #[must_use]
    pub fn runs(record: &str) -> Vec<Run> {
        std::fs::read_to_string(record)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split_once(' '))
            .filter_map(|(attempt, at)| Some(Run { attempt: attempt.parse().ok()?, at_ms: at.parse().ok()? }))
            .collect()
    }
}

async fn flaky(job: Flaky, ctx: JobContext) -> anyhow::Result<usize> {
    let before = Flaky::runs(&job.record).len();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&job.record)?;
    file.write_all(format!("{} {now}\n", ctx.attempt()).as_bytes())?;
    tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
    if before < job.fail_times {
        let message = format!("run {} failed on purpose", before + 1);
        return Err(if job.permanent { JobError::permanent(message) } else { JobError::retry(message) }.into());
    }
    Ok(before + 1)
}

/// `test.panic`: panics.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Panic {}

impl Job for Panic {
    const NAME: &'static str = "test.panic";
    type Output = ();
}

async fn panic(_: Panic, _: JobContext) -> Result<(), JobError> {
    panic!("this handler panics on purpose")
}

/// `test.abort`: kills the worker process (SIGABRT), like a segfault in native code would.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Abort {}

impl Job for Abort {
    const NAME: &'static str = "test.abort";
    type Output = ();
}

async fn abort(_: Abort, _: JobContext) -> Result<(), JobError> {
    std::process::abort()
}

/// `test.remember`: appends its `batch` argument as a JSON line to the file `path`. Used as a
/// batch callback, which receives the batch summary as `batch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Remember {
    /// The file.
    pub path: String,
    /// Filled in by the batch tracker.
    #[serde(default)]
    pub batch: serde_json::Value,
}

impl Job for Remember {
    const NAME: &'static str = "test.remember";
    type Output = ();
}

impl Remember {
    /// The summaries remembered in `path`, one per callback run.
    #[must_use]
    pub fn calls(path: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }
}

async fn remember(job: Remember) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&job.path)?;
    file.write_all(format!("{}\n", job.batch).as_bytes())?;
    Ok(())
}

/// `test.tick`: appends its own job id as a line to the file `path`, then sleeps `sleep_ms`;
/// scheduled jobs use it, so tests can count firings by their deterministic ids, and the
/// failover tests count each job's runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tick {
    /// The file.
    pub path: String,
    /// Milliseconds to sleep after recording the run, before answering.
    #[serde(default)]
    pub sleep_ms: u64,
}

impl Job for Tick {
    const NAME: &'static str = "test.tick";
    type Output = ();
}

impl Tick {
    /// The job ids recorded in `path`, in order.
    #[must_use]
    pub fn ids(path: &str) -> Vec<String> {
        std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
    }
}

async fn tick(job: Tick, ctx: JobContext) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&job.path)?;
    file.write_all(format!("{}\n", ctx.id()).as_bytes())?;
    tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
    Ok(())
}

/// `test.raise`: fails for good with `message`, as the exception class `exception` (a
/// `module.Class` or a bare name) if given, caused by an error saying `cause` if given.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Raise {
    /// The error message.
    pub message: String,
    /// The exception class Celery clients see.
    #[serde(default)]
    pub exception: Option<String>,
    /// The message of the error that caused it.
    #[serde(default)]
    pub cause: Option<String>,
}

impl Job for Raise {
    const NAME: &'static str = "test.raise";
    type Output = ();
}

async fn raise(job: Raise) -> Result<(), JobError> {
    let mut error = JobError::permanent(job.message);
    if let Some(class) = job.exception {
        error = error.exception(class);
    }
    if let Some(cause) = job.cause {
        error = error.caused_by(std::io::Error::other(cause));
    }
    Err(error)
}

/// Registers the demo jobs and the test jobs.
#[must_use]
pub fn register(worker: Worker) -> Worker {
    lepus_demo::jobs::register(worker)
        .register(word_count)
        .register(flaky)
        .register(panic)
        .register(abort)
        .register(remember)
        .register(tick)
        .register(raise)
        .register(crate::keyed::keyed)
}
