//! The `raw-worker` role: the ceiling, a worker written with plain lapin and no framework.
//!
//! One connection; a consuming channel with per-consumer prefetch equal to the Lepus worker's
//! concurrency; a confirm-mode channel for results. Each delivery is settled in a task of its own,
//! so up to the prefetch count at once as in the Lepus worker (acking one after the other would
//! serialise the acks on lapin's I/O thread). A delivery with `reply_to` first gets a fixed result
//! published to that queue (persistent, mandatory, confirmed); then every delivery is acked. Runs
//! on a multi-thread tokio runtime, as the Lepus worker does, until SIGTERM.

use crate::role::WorkerSpec;
use anyhow::{Context, bail};
use futures_lite::StreamExt;
use lepus::lapin::message::Delivery;
use lepus::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lepus::lapin::types::FieldTable;
use lepus::lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use lepus::protocol::ResultMessage;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::signal::unix::{SignalKind, signal};

/// The result every job returns, about the size of a small Celery result.
pub(crate) const RESULT: &[u8] = br#"{"status": "SUCCESS", "result": null, "traceback": null, "children": []}"#;

/// The result body: [`RESULT`], or with `--raw-headers` a Lepus `SUCCESS` result message.
fn result_body(celery_wire: bool) -> Arc<[u8]> {
    let lepus = ResultMessage::success(&lepus::JobId::random(), serde_json::Value::Null).encode("x").ok();
    match lepus {
        Some((body, _)) if celery_wire => Arc::from(body),
        _ => Arc::from(RESULT),
    }
}

pub(crate) fn run(spec: &WorkerSpec) -> ExitCode {
    let served = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(serve(spec)));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lepus-bench raw worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(spec: &WorkerSpec) -> anyhow::Result<()> {
    let properties = ConnectionProperties::default().with_connection_name("lepus-bench raw worker".into());
    let connection = Connection::connect(&spec.amqp_url, properties).await.context("connect")?;
    let consuming = connection.create_channel().await?;
    consuming.basic_qos(spec.concurrency, BasicQosOptions { global: false }).await?;
    let publishing = connection.create_channel().await?;
    publishing.confirm_select(ConfirmSelectOptions::default()).await?;

    let result = result_body(spec.celery_wire);
    let acked = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&acked);
    crate::watcher::spawn(&spec.targets, move || count.load(Ordering::Relaxed))?;

    let options = BasicConsumeOptions::default();
    let mut consumer =
        consuming.basic_consume(spec.queue.as_str().into(), "".into(), options, FieldTable::default()).await?;
    let mut terminate = signal(SignalKind::terminate())?;
    loop {
        let delivery = tokio::select! {
            _ = terminate.recv() => break,
            next = consumer.next() => match next {
                Some(delivery) => delivery?,
                None => bail!("the broker cancelled the consumer of {}", spec.queue),
            },
        };
        let (publishing, acked, result) = (publishing.clone(), Arc::clone(&acked), Arc::clone(&result));
        tokio::spawn(async move {
            match settle(&delivery, &publishing, &result).await {
                Ok(()) => drop(acked.fetch_add(1, Ordering::Relaxed)),
                Err(e) => eprintln!("lepus-bench raw worker: {e:#}"),
            }
        });
    }
    drop(connection.close(200, "stopped".into()).await);
    Ok(())
}

/// Acks the delivery, after publishing its result and awaiting the confirm if it wants one.
async fn settle(delivery: &Delivery, publishing: &Channel, result: &[u8]) -> anyhow::Result<()> {
    let Some(reply_to) = delivery.properties.reply_to().clone() else { return ack(delivery).await };
    let mut properties = BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
    if let Some(id) = delivery.properties.correlation_id() {
        properties = properties.with_correlation_id(id.clone());
    }
    let options = BasicPublishOptions { mandatory: true, immediate: false };
    let confirm = publishing.basic_publish("".into(), reply_to, options, result, properties).await?;
    match confirm.await? {
        Confirmation::Ack(None) => ack(delivery).await,
        other => bail!("result not accepted by the broker: {other:?}"),
    }
}

async fn ack(delivery: &Delivery) -> anyhow::Result<()> {
    if delivery.acker.ack(BasicAckOptions::default()).await? {
        Ok(())
    } else {
        bail!("ack refused: the channel is gone")
    }
}
