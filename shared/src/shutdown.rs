//! [`shutdown_signal`]: the future a worker or scheduler binary passes to its `run`; and
//! [`cancelled_by`], which turns such a future into a token every task can watch.

/// Completes on ctrl-c (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => drop(signal.recv().await),
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received: stopping"),
        () = terminate => tracing::info!("SIGTERM received: stopping"),
    }
}

/// A token cancelled once `shutdown` completes; the future is driven by a task of its own.
#[must_use]
pub fn cancelled_by(shutdown: impl Future<Output = ()> + Send + 'static) -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        cancel.cancel();
    });
    token
}
