//! Celery's message protocol v2 (JSON): task messages, result messages, and how typed inputs map
//! to `args`/`kwargs`.

pub(crate) mod amqp_value;
mod args;
mod result;
mod task;

pub use args::{Arguments, ArgumentsError};
pub use result::{ExceptionInfo, ResultMessage, Status};
pub(crate) use task::without;
pub use task::{CONTENT_TYPE, DecodeError, TaskMessage, TimeLimit};
pub use task::{header_str, rescheduled, set_header};

use lapin::BasicProperties;
use std::sync::OnceLock;

/// Properties of Lepus's own JSON records (batch records and snapshots, schedule state):
/// persistent, `application/json`.
#[must_use]
pub fn persistent_json() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2).with_content_type(CONTENT_TYPE.into())
}

/// This process's node name, `hostname:pid`: Celery's `origin` header and the result's `worker`.
#[must_use]
pub fn node_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        format!("{host}:{}", std::process::id())
    })
}
