//! LISTEN/NOTIFY: wakes the claim loop when subtasks become READY and stops
//! runs whose cancel was requested; reconnects on its own, and polling
//! covers whatever it misses.

use super::Worker;
use crate::store;
use sqlx::postgres::PgListener;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

impl Worker {
    pub(super) async fn listen_loop(self, stop: CancellationToken) {
        loop {
            let mut listener = match PgListener::connect_with(&self.inner.pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; polling meanwhile");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if let Err(e) = listener
                .listen_all([store::READY_CHANNEL, store::CANCEL_CHANNEL])
                .await
            {
                tracing::warn!(error = %e, "LISTEN failed; polling meanwhile");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
            self.inner.listening.store(true, Ordering::Relaxed);
            // Anything sent while we were not listening: look now.
            self.inner.wake.notify_one();
            loop {
                let n = tokio::select! {
                    _ = stop.cancelled() => return,
                    n = listener.try_recv() => n,
                };
                if !matches!(n, Ok(Some(_))) {
                    // Notifications may have been missed (or will be):
                    // this worker must not count on them until it listens
                    // again.
                    self.inner.listening.store(false, Ordering::Relaxed);
                }
                match n {
                    Ok(Some(n)) if n.channel() == store::CANCEL_CHANNEL => {
                        if let Ok(id) = n.payload().parse::<i64>() {
                            self.cancel_run(id);
                        }
                    }
                    Ok(Some(_)) => self.inner.wake.notify_one(),
                    Ok(None) => {
                        // Connection lost and re-established: we may have
                        // missed hints.
                        self.inner.listening.store(true, Ordering::Relaxed);
                        self.inner.wake.notify_one();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection broke; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}
