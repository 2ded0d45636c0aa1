//! The whole run: rounds that measure both sides, alternating which goes first so that drift in
//! a noisy machine falls on both alike; each side on queues named `bench-<pid>-<round>-<side>`.

use crate::admin::Admin;
use crate::figures::{Figures, RoundFigures};
use crate::options::Options;
use crate::phases::Run;
use crate::report;
use crate::role::Side;
use anyhow::Context;
use lepus::Job;
use lepus::protocol::{Arguments, TaskMessage};
use lepus_demo::jobs::Noop;
use std::path::Path;

pub(crate) async fn run(options: &Options, admin: &Admin) -> anyhow::Result<()> {
    let pid = std::process::id();
    let logs = std::env::temp_dir().join(format!("lepus-bench-{pid}"));
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    report::header(options, lepus_body_size()?);
    let mut rounds = Vec::new();
    for round in 1..=options.rounds {
        let order = if round % 2 == 1 { [Side::Raw, Side::Lepus] } else { [Side::Lepus, Side::Raw] };
        let first = measure(options, admin, &logs, round, order[0]).await?;
        let second = measure(options, admin, &logs, round, order[1]).await?;
        let (raw, lepus) = if order[0] == Side::Raw { (first, second) } else { (second, first) };
        let figures = RoundFigures { raw, lepus };
        report::round(round, options.rounds, order[0], &figures);
        rounds.push(figures);
    }
    report::summary(&rounds);
    drop(std::fs::remove_dir_all(&logs));
    Ok(())
}

/// Measures one side in one round.
async fn measure(options: &Options, admin: &Admin, logs: &Path, round: u32, side: Side) -> anyhow::Result<Figures> {
    let pid = std::process::id();
    let log = logs.join(format!("round-{round}-{}-worker.log", side.tag()));
    let run = Run {
        side,
        label: format!("round {round}/{}, {side}", options.rounds),
        queue: format!("bench-{pid}-{round}-{}", side.tag()),
        options,
        admin,
        log: &log,
    };
    run.measure().await.with_context(|| format!("round {round}, {side}"))
}

/// The body size of a Lepus `demo.noop` message.
fn lepus_body_size() -> anyhow::Result<usize> {
    let message = TaskMessage::new(Noop::NAME, Arguments::from_input(&Noop {})?);
    Ok(message.encode()?.0.len())
}
