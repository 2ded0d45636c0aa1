//! Lepus's integration tests against the real broker, one test binary for all (one link, one
//! process start per test run). Each module tests one behaviour; every test uses queues of its
//! own, so tests run in parallel, except those in `reconnect` and `broker_restart`, which cut
//! connections or restart the broker and run alone (the `broker-disruption` group in
//! `.config/nextest.toml`), and those in `failover`, which start a three-node cluster of their
//! own and run alone too (the `failover` group).

mod acks;
mod batches;
mod broker_restart;
mod broker_urls;
mod bulk_enqueue;
mod canvas;
mod celery_interop;
mod celery_tools;
mod concurrency_keys;
mod dead_letter_api;
mod dead_letters;
mod delays;
mod enqueue;
mod event_interop;
mod event_replay;
mod events;
mod failover;
mod lepus_cli;
mod logging;
mod metrics;
mod poison;
mod priorities;
mod prometheus;
mod rate_limits;
mod reconnect;
mod remote_control;
mod retries;
mod roundtrip;
mod scheduler;
mod settings;
mod state;
mod timeouts;
mod tls;
mod topology;
mod unique_jobs;
mod worker_crash;
mod worker_shutdown;
