//! Celery's message protocol v2 (JSON): task messages, result messages, and how typed inputs map
//! to `args`/`kwargs`.

pub(crate) mod amqp_value;
mod args;
mod canvas;
pub(crate) mod headers;
mod result;
pub(crate) mod task;

pub use args::{Arguments, ArgumentsError};
pub use canvas::{Embed, Signature, SignatureDefaults};
pub use result::{ExceptionInfo, ResultMessage, Status};
pub use task::{CONTENT_TYPE, DecodeError, TaskMessage, TimeLimit};
