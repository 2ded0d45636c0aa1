//! [`Health`]: whether a replica is connected to the broker, for `/readyz` and
//! `lepus_broker_connected`. The replica marks it when it connects and when it finds its
//! connection gone (at once while it leads, within a standby poll while it stands by).

use lepus::internal::endpoint::Readiness;
use metrics::Gauge;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;

/// Whether the replica is connected.
pub(crate) struct Health {
    connected: AtomicBool,
    /// Whether the replica was ever connected.
    ever: AtomicBool,
    gauge: Gauge,
    stop: CancellationToken,
}

impl Health {
    pub(crate) fn new(gauge: Gauge, stop: CancellationToken) -> Self {
        gauge.set(0.0);
        Self { connected: AtomicBool::new(false), ever: AtomicBool::new(false), gauge, stop }
    }

    /// The replica has connected; returns whether it had lost an earlier connection.
    pub(crate) fn connect(&self) -> bool {
        let was = self.connected.swap(true, Ordering::AcqRel);
        let ever = self.ever.swap(true, Ordering::AcqRel);
        self.gauge.set(1.0);
        ever && !was
    }

    /// The replica's connection is gone.
    pub(crate) fn lost(&self) {
        self.connected.store(false, Ordering::Release);
        self.gauge.set(0.0);
    }

    /// What `/readyz` asks.
    pub(crate) fn readiness(self: &Arc<Self>) -> Readiness {
        let health = Arc::clone(self);
        Arc::new(move || health.ready())
    }

    /// `Ok` while connected and not stopping; else why not.
    pub(crate) fn ready(&self) -> Result<(), String> {
        if self.stop.is_cancelled() {
            Err("stopping".to_owned())
        } else if self.connected.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err("not connected to the broker (connecting)".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_while_connected_and_a_connection_after_a_loss_is_a_reconnection() {
        let stop = CancellationToken::new();
        let health = Health::new(Gauge::noop(), stop.clone());
        assert!(health.ready().is_err());
        assert!(!health.connect(), "the first connection");
        assert_eq!(health.ready(), Ok(()));
        assert!(!health.connect(), "a new connection while the last one lived");
        health.lost();
        assert_eq!(health.ready(), Err("not connected to the broker (connecting)".to_owned()));
        assert!(health.connect(), "after a loss");
        stop.cancel();
        assert_eq!(health.ready(), Err("stopping".to_owned()));
    }
}
