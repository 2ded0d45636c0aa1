//! Support for the integration tests: uniquely named queues that clean up after themselves,
//! worker processes to start, signal and kill, reply queues read raw, the jobs the test worker runs, and the Python
//! Celery environment for the interop tests. Everything talks to the real broker
//! (`LEPUS_AMQP_URL`, default the local RabbitMQ).

mod jobs;
mod processes;
mod python;
mod queues;
mod replies;

pub use jobs::{Abort, Flaky, Panic, Remember, Run, Tick, WordCount, WordStats, register as register_jobs};
pub use processes::{WorkerProcess, binary as worker_binary, scheduler_binary};
pub use python::{celery_python, python_dir};
pub use queues::{
    Cleanup, TestQueue, amqp_url, connect, cut_connections, header_u64, rabbitmqctl, temp_file, unique_name, wait_until,
};
pub use replies::RawReplies;
