//! Jobs defined by the tests (not by Lepus), registered by `lepus-test-worker` next to the demo
//! jobs: they prove that a user's own typed jobs work end to end.

use lepus::Job;
use lepus_worker::{JobContext, JobError, Worker};
use serde::{Deserialize, Serialize};

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

async fn word_count(job: WordCount, _: JobContext) -> Result<WordStats, JobError> {
    Ok(WordStats { words: job.text.split_whitespace().count(), chars: job.text.chars().count() })
}

/// Registers the demo jobs and the test jobs.
#[must_use]
pub fn register(worker: Worker) -> Worker {
    lepus_worker::demo::register(worker).register(word_count)
}
