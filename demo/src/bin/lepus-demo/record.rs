//! `demo.record`: a job that only the demo's own workers run. Each run writes its job id down, one
//! line in a file per worker process, and the demo reads them back to count what ran.
//!
//! This is how the demo sees scheduled jobs and batch callbacks: they are published without a
//! reply queue, so no result comes back for them. The schedule `demo-pulse` sends `demo.record`
//! itself, and every batch (the client's and the scheduled ones) has it as its callback, so the
//! ids written down are the firings' ids (`<schedule>@<tick UTC>`) and `<batch id>.callback`. A
//! job that ran twice is written down twice.

use anyhow::Context as _;
use lepus::{Job, JobId};
use lepus_worker::{JobContext, JobError, Worker};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The variable that tells a worker process the directory to write its records in.
pub(crate) const RECORDS_VARIABLE: &str = "LEPUS_DEMO_RECORDS";

/// The records' file names: `records-<worker pid>.txt`.
const PREFIX: &str = "records-";
const SUFFIX: &str = ".txt";

/// `demo.record`: takes any keyword arguments (a callback gets the batch summary as `batch`),
/// writes its job id down and returns it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Record(pub(crate) Map<String, Value>);

impl Job for Record {
    const NAME: &'static str = "demo.record";
    type Output = String;
}

/// Adds `demo.record` to a worker; its records go to the directory named by [`RECORDS_VARIABLE`].
pub(crate) fn register(worker: Worker) -> Worker {
    let file = std::env::var_os(RECORDS_VARIABLE)
        .map(|dir| PathBuf::from(dir).join(format!("{PREFIX}{}{SUFFIX}", std::process::id())));
    let file = Arc::new(file);
    worker.register(move |_: Record, context: JobContext| {
        let file = Arc::clone(&file);
        async move { write_down(file.as_deref(), context.id()).await }
    })
}

async fn write_down(file: Option<&Path>, id: &JobId) -> Result<String, JobError> {
    let file = file.ok_or_else(|| JobError::permanent(format!("{RECORDS_VARIABLE} is not set")))?.to_owned();
    let line = format!("{id}\n");
    // One short write to a file opened for appending: lines of concurrent runs do not mix.
    let written = tokio::task::spawn_blocking(move || {
        std::fs::OpenOptions::new().create(true).append(true).open(&file)?.write_all(line.as_bytes())
    })
    .await
    .map_err(|e| JobError::new(format!("the record could not be written: {e}")))?;
    written.map_err(JobError::from_error)?;
    Ok(id.to_string())
}

/// Every job id written down in `dir` so far, with how many times it ran.
pub(crate) fn read(dir: &Path) -> anyhow::Result<BTreeMap<String, u32>> {
    let mut runs = BTreeMap::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !(name.starts_with(PREFIX) && name.ends_with(SUFFIX)) {
            continue;
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        for id in text.lines().filter(|line| !line.is_empty()) {
            *runs.entry(id.to_owned()).or_default() += 1;
        }
    }
    Ok(runs)
}
