//! The whole run: rounds that measure both sides, alternating which goes first so that drift in
//! a noisy machine falls on both alike; each side on queues named `bench-<pid>-<round>-<side>`.

use crate::admin::Admin;
use crate::figures::{Figures, RoundFigures};
use crate::options::Options;
use crate::phases::Run;
use crate::report;
use crate::role::Contender;
use anyhow::Context;
use lepus::Job;
use lepus::protocol::{Arguments, TaskMessage};
use lepus_demo::jobs::Noop;
use std::path::Path;

pub(crate) async fn run(options: &Options, admin: &Admin) -> anyhow::Result<()> {
    let pid = std::process::id();
    let logs = std::env::temp_dir().join(format!("lepus-bench-{pid}"));
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let [baseline, measured] = Contender::pair(options.feature());
    report::header(options, lepus_body_size()?);
    let mut rounds = Vec::new();
    for round in 1..=options.rounds {
        let order = if round % 2 == 1 { [baseline, measured] } else { [measured, baseline] };
        let first = measure(options, admin, &logs, round, order[0]).await?;
        let second = measure(options, admin, &logs, round, order[1]).await?;
        let (baseline_figures, measured_figures) = if order[0] == baseline { (first, second) } else { (second, first) };
        let figures = RoundFigures { baseline: baseline_figures, measured: measured_figures };
        report::round(round, options.rounds, order[0], [baseline, measured], &figures);
        rounds.push(figures);
    }
    report::summary([baseline, measured], &rounds);
    drop(std::fs::remove_dir_all(&logs));
    Ok(())
}

/// Measures one contender in one round.
async fn measure(
    options: &Options,
    admin: &Admin,
    logs: &Path,
    round: u32,
    contender: Contender,
) -> anyhow::Result<Figures> {
    let pid = std::process::id();
    let log = logs.join(format!("round-{round}-{}-worker.log", contender.tag()));
    let run = Run {
        contender,
        label: format!("round {round}/{}, {contender}", options.rounds),
        queue: format!("bench-{pid}-{round}-{}", contender.tag()),
        options,
        admin,
        log: &log,
    };
    run.measure().await.with_context(|| format!("round {round}, {contender}"))
}

/// The body size of a Lepus `demo.noop` message.
fn lepus_body_size() -> anyhow::Result<usize> {
    let message = TaskMessage::new(Noop::NAME, Arguments::from_input(&Noop {})?);
    Ok(message.encode()?.0.len())
}
