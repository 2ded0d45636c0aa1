//! How the demo ended, and the exit code: the verdict printed last.

use crate::console::{errln, outln};
use std::process::ExitCode;

/// How the part between start-up and clean-up ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Everything ran; `wrong` says what did not end as expected (empty if all did).
    Finished { wrong: Vec<&'static str> },
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// Something kept the demo from running; already reported by [`give_up`].
    Failed,
}

/// Reports on standard error, at once, what kept the demo from running.
pub(crate) fn give_up(error: &anyhow::Error) -> Outcome {
    errln!("lepus-demo: {error:#}");
    Outcome::Failed
}

/// Whether the stop and the clean-up went well.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stops {
    pub(crate) workers_clean: bool,
    pub(crate) schedulers_clean: bool,
    pub(crate) cleaned: bool,
}

/// Prints the verdict and picks the exit code.
pub(crate) fn finish(outcome: Outcome, stops: Stops) -> ExitCode {
    let Stops { workers_clean, schedulers_clean, cleaned } = stops;
    match outcome {
        Outcome::Finished { wrong } if wrong.is_empty() && workers_clean && schedulers_clean && cleaned => {
            outln!(
                "\nEvery job got the expected result, every scheduled tick ran once, and the batches completed with one callback each."
            );
            ExitCode::SUCCESS
        }
        Outcome::Finished { mut wrong } => {
            if !workers_clean {
                wrong.push("some workers did not exit cleanly");
            }
            if !schedulers_clean {
                wrong.push("some scheduler replicas did not exit cleanly");
            }
            if !cleaned {
                wrong.push("the clean-up was incomplete");
            }
            errln!("\nlepus-demo: {}.", wrong.join("; "));
            ExitCode::FAILURE
        }
        Outcome::Interrupted => {
            errln!("\nlepus-demo: interrupted; the workers and schedulers are stopped and the demo's queues removed.");
            ExitCode::from(130)
        }
        Outcome::Failed => {
            errln!("\nlepus-demo: stopped early because of the error above.");
            ExitCode::FAILURE
        }
    }
}
