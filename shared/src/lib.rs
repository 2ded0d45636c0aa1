//! Lepus: typed background jobs on RabbitMQ, wire-compatible with Celery's message protocol v2.
//!
//! This crate holds what senders and workers share: the [`Job`] trait, the Celery
//! [`protocol`], data [`event`]s between services, the AMQP topology ([`WorkQueue`]), broker
//! connections and the [`Client`].
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

mod batch;
mod broker;
mod client;
mod concurrency;
pub mod control;
pub mod dead_letter;
#[cfg(feature = "serve")]
mod endpoint;
mod error;
pub mod event;
mod ids;
mod job;
mod priority;
pub mod protocol;
mod publisher;
mod rate;
mod rate_issuer;
mod reconnect;
mod records;
mod replies;
mod request;
mod retry;
#[cfg(feature = "settings")]
mod settings;
mod shutdown;
pub mod telemetry;
mod tls;
mod topology;
mod transaction;
mod unique;

pub use batch::{Batch, BatchProgress, BatchSummary};
pub use broker::{Broker, Connector, UrlOrder};
pub use client::{Client, ClientOptions, Pending, Sent};
pub use concurrency::{
    CONCURRENCY_KEY_HEADER, CONCURRENCY_LIMIT_HEADER, Concurrency, MAX_CONCURRENCY_KEY, MAX_CONCURRENCY_LIMIT,
};
pub use dead_letter::{DeadLetter, DeadLetters};
pub use error::{Error, ReplyCode, Result};
pub use event::{Envelope, Event, Publish};
pub use ids::{BatchId, EventId, JobId};
pub use job::Job;
pub use priority::Priority;
pub use rate::{InvalidRate, RATE_KEY_HEADER, RATE_LIMIT_HEADER, Rate};
pub use rate_issuer::{RateIssuer, rate_issuer};
pub use request::Request;
pub use retry::RetryPolicy;
pub use shutdown::shutdown_signal;
pub use tls::Tls;
pub use topology::{DEFAULT_DELIVERY_LIMIT, DEFAULT_QUEUE, EventLog, MAX_DELAY, WorkQueue};
pub use unique::{OnDuplicate, Unique};

/// The broker URL used when none is configured (`LEPUS_AMQP_URL`).
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Re-exported so that users need not depend on lapin for channels and properties.
pub use lapin;

/// Plumbing that `lepus-worker` and `lepus-scheduler` share with this crate (and that Lepus's own
/// tests and tools use): publishing and transactions, batch tracking, dead-letter marking, the
/// reconnect policy and every queue name. Not part of the public API: it changes without notice.
#[doc(hidden)]
pub mod internal {
    pub use crate::batch::{Callback, Completion, Entry, FailedJob, PreparedBatch, Record, SIZE_HEADER, Snapshot};
    pub use crate::broker::{Connector, redact};
    pub use crate::dead_letter::marks::{delivery_count, mark, revived};
    pub use crate::error::UNREACHABLE_HINT;
    pub use crate::protocol::amqp_value::json_from_table;
    pub use crate::protocol::headers::{header_str, node_name, persistent_json, set_header, without};
    pub use crate::protocol::task::rescheduled;
    pub use crate::publisher::{Outgoing, Publisher};
    pub use crate::rate::{requested as requested_rate, requested_key as requested_rate_key};
    pub use crate::reconnect::reconnect;
    pub use crate::retry::held_retry_delay;
    pub use crate::shutdown::cancelled_by;
    pub use crate::transaction::Transaction;
    pub use crate::unique::{Released, UNIQUE_KEY_HEADER, release as release_unique};

    /// Metrics, and the HTTP endpoint that serves them with health checks.
    #[cfg(feature = "serve")]
    pub mod endpoint {
        pub use crate::endpoint::*;
    }

    /// Layered settings for Lepus's programs.
    #[cfg(feature = "settings")]
    pub mod settings {
        pub use crate::settings::*;
    }

    /// A test harness's hooks into a recording client.
    pub mod recording {
        pub use crate::client::{answer, finish_batch_job, send};
    }

    /// Lepus's own JSON records in queues.
    pub mod records {
        pub use crate::records::newest;
    }

    /// Every queue and exchange Lepus names and declares.
    pub mod topology {
        pub use crate::topology::*;
    }
}
