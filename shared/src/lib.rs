//! Lepus: typed background jobs on RabbitMQ, wire-compatible with Celery's message protocol v2.
//!
//! This crate holds what senders and workers share: the [`Job`] trait, the Celery
//! [`protocol`], the AMQP [`topology`], broker connections and the [`Client`].
//!
//! ```no_run
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Serialize, Deserialize)] struct Add { a: i64, b: i64 }
//! # impl lepus::Job for Add { const NAME: &'static str = "demo.add"; type Output = i64; }
//! # async fn demo() -> lepus::Result<()> {
//! let client = lepus::Client::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
//! let sum = client.call(Add { a: 2, b: 3 }, std::time::Duration::from_secs(5)).await?;
//! assert_eq!(sum, 5);
//! # Ok(()) }
//! ```

pub mod batch;
mod broker;
mod client;
pub mod dead_letter;
mod error;
mod job;
pub mod protocol;
mod publisher;
mod replies;
mod request;
mod retry;
mod shutdown;
pub mod telemetry;
pub mod topology;
mod transaction;

pub use batch::{Batch, BatchId, BatchProgress, BatchSummary};
pub use broker::{Broker, UNREACHABLE_HINT, redact};
pub use client::{Client, ClientOptions, Pending};
pub use error::{Error, Result};
pub use job::{Job, JobId};
pub use publisher::{Outgoing, Publisher};
pub use request::Request;
pub use retry::RetryPolicy;
pub use shutdown::{cancelled_by, shutdown_signal};
pub use transaction::Transaction;

/// The broker URL used when none is configured (`LEPUS_AMQP_URL`).
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Re-exported so that users need not depend on lapin for channels and properties.
pub use lapin;
