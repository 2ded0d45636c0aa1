//! Support for the integration tests: uniquely named queues that clean up after themselves,
//! RabbitMQ nodes and three-node clusters of a test's own,
//! worker processes to start, signal and kill, reply queues read raw, the jobs the test worker runs, and the Python
//! Celery environment for the interop tests. Everything talks to the real broker
//! (`LEPUS_AMQP_URL`, default the local RabbitMQ).

mod certs;
mod cluster;
mod events;
mod http;
mod jobs;
mod keyed;
mod nodes;
mod processes;
mod python;
mod queues;
mod replies;

pub use certs::Pki;
pub use cluster::Cluster;
pub use events::{
    Checked, Fanned, Handled, Heard, Plain, Poisoned, Pythonic, Resumed, Sequenced, Waited, consumers_on, publish_all,
    read_handled, run_service, subscriber_main, test_service,
};
pub use http::{Samples, free_address, http_get};
pub use jobs::{Abort, Flaky, Panic, Raise, Remember, Run, Tick, WordCount, WordStats, register as register_jobs};
pub use keyed::{Keyed, Span};
pub use lepus_demo::process::Process;
pub use nodes::Node;
pub use processes::{
    cli_binary, node_name, queue_with_worker, scheduler_binary, spawn, start_worker, start_worker_with_env,
    subscriber_binary, worker_binary,
};
pub use python::{celery_command, celery_python, python_dir, run_python_args, run_python_with};
pub use queues::{
    Cleanup, TestQueue, amqp_url, connect, consumers_of, cut_connections, header_u64, queue_names, rabbitmqctl,
    temp_file, unique_name, wait_until,
};
pub use replies::RawReplies;
