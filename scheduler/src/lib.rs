//! The Lepus scheduler: cron-style periodic jobs and batches, safe to run as several replicas
//! with nothing but RabbitMQ.
//!
//! One replica leads at a time (it holds an exclusive queue on a connection with short
//! heartbeats); the others stand by and take over when its connection dies. Each firing has a
//! deterministic id (schedule name and tick time in UTC), and is published in one transaction
//! with the schedule's new last-fire time, kept in the broker: a new leader knows what fired, and
//! a firing is never half done. Missed ticks follow each schedule's [`Misfire`] policy.

mod agenda;
#[cfg(feature = "cli")]
pub mod cli;
mod config;
mod cron;
mod error;
mod file;
mod health;
mod leader;
mod metrics;
mod schedule;
mod scheduler;
mod state;
mod stats;

pub use config::SchedulerConfig;
pub use cron::{CronError, CronExpr};
pub use error::SchedulerError;
pub use file::{ScheduleFileError, load as load_schedules, parse as parse_schedules};
pub use leader::{Leader, leader};
pub use schedule::{Firing, MAX_CATCH_UP, Misfire, Schedule, ScheduleCallback, ScheduleError, ScheduleInfo};
pub use scheduler::Scheduler;
pub use state::last_fired;
pub use stats::SchedulerStats;
