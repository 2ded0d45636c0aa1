//! The Lepus worker runtime: register typed job handlers, consume RabbitMQ queues, run jobs with
//! a concurrency limit, publish results, and ack only once the result is safe.
//!
//! ```no_run
//! use lepus_worker::{JobContext, JobError, Worker, WorkerConfig, shutdown_signal};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Resize { url: String, width: u32 }
//! impl lepus::Job for Resize { const NAME: &'static str = "images.resize"; type Output = String; }
//!
//! async fn resize(job: Resize, ctx: JobContext) -> Result<String, JobError> {
//!     Ok(format!("{} at {}px (job {})", job.url, job.width, ctx.id()))
//! }
//!
//! # async fn run() -> Result<(), lepus_worker::WorkerError> {
//! Worker::new(WorkerConfig::default()).register(resize).run(shutdown_signal()).await
//! # }
//! ```

mod acks;
mod activity;
mod batch_records;
mod canvas;
#[cfg(feature = "cli")]
pub mod cli;
mod commands;
mod config;
mod consumer;
mod context;
mod control;
mod delivery;
mod error;
mod event_context;
mod events;
mod execute;
mod extract;
mod handler;
mod health;
mod job_error;
mod loops;
mod metrics;
mod outcome;
mod priorities;
mod queues;
mod rate_gate;
mod rate_issuer;
mod rate_limits;
mod registry;
mod replay;
mod revoked;
mod selector;
mod slots;
mod states;
mod stats;
mod subscription;
pub mod testing;
mod tiers;
mod tracker;
mod unique;
mod worker;

pub use config::WorkerConfig;
pub use context::JobContext;
pub use error::WorkerError;
pub use event_context::EventContext;
pub use extract::{FromContext, State};
pub use handler::Handler;
pub use job_error::{BoxError, JobError};
pub use lepus::Priority;
pub use lepus::shutdown_signal;
pub use priorities::Priorities;
pub use revoked::{MAX_REVOKED, REVOKE_EXPIRES};
pub use stats::WorkerStats;
pub use subscription::{EventHandler, ReplayFrom, Seen, Subscription, default_event_retry};
pub use worker::Worker;
