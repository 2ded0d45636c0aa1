//! Celery's message protocol v2 (JSON): task messages, result messages, and how typed inputs map
//! to `args`/`kwargs`; and Celery's remote-control messages and monitoring events.

pub(crate) mod amqp_value;
mod args;
mod canvas;
pub mod control;
pub mod events;
mod follow_up;
pub(crate) mod headers;
mod result;
pub(crate) mod task;

pub use args::{Arguments, ArgumentsError};
pub use canvas::{Embed, Signature};
pub use follow_up::Parent;
pub use headers::CONTENT_TYPE;
pub use result::{ExceptionInfo, ResultMessage, Status};
pub use task::{DecodeError, TaskMessage, TimeLimit};
