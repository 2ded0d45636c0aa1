//! The Lepus demo, and what it shares with Lepus's own tests and benchmark:
//!
//! - [`jobs`]: the demo jobs (`demo.add`, `demo.echo`, `demo.sleep`, `demo.fail`, `demo.noop`)
//!   that the stock `lepus-worker` runs, and that the README, the benchmark and the tests use;
//! - [`process`]: child processes started, signalled and stopped by the demo, the benchmark and
//!   the integration tests.
//!
//! The programs: `lepus-demo` (workers and scheduler replicas on demo jobs, checked end to end)
//! and `lepus-worker` (the worker command line with the demo jobs).

pub mod jobs;
pub mod process;
