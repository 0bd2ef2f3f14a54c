//! Liveness: the worker heartbeats its own row; when it cannot for
//! dead-after it stops its work and claims nothing until a heartbeat lands.
//! Each heartbeat also polls for cancels whose notification was missed.

use super::{StopReason, Worker};
use crate::engine::Result;
use crate::store;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

impl Worker {
    /// One heartbeat; false when the row was gone (revived now).
    pub async fn heartbeat(&self) -> Result<bool> {
        let alive = store::worker::heartbeat(&self.inner.pool, &self.inner.id).await?;
        if !alive {
            tracing::warn!(worker = %self.inner.id, "declared dead by a sweeper; stopping running work");
            self.stop_all(StopReason::LostLease);
            self.register().await?;
        }
        self.poll_cancels().await?;
        Ok(alive)
    }

    /// Polling fallback for cancels whose notification was missed.
    async fn poll_cancels(&self) -> Result<()> {
        if self.running_len() == 0 {
            return Ok(());
        }
        for id in store::subtask::canceling_for(&self.inner.pool, &self.inner.id).await? {
            self.cancel_run(id);
        }
        Ok(())
    }

    pub(super) async fn heartbeat_loop(self, stop: CancellationToken) {
        let inner = &self.inner;
        let mut last_ok = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(inner.cfg.heartbeat_interval) => {}
            }
            crate::metrics::METRICS
                .heartbeat_age
                .set(last_ok.elapsed().as_secs_f64());
            match self.heartbeat().await {
                Ok(_) => {
                    last_ok = Instant::now();
                    if !inner.healthy.swap(true, Ordering::Relaxed) {
                        tracing::info!("heartbeat restored; claiming again");
                        inner.wake.notify_one();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "heartbeat failed");
                    if last_ok.elapsed() >= inner.cfg.dead_after
                        && inner.healthy.swap(false, Ordering::Relaxed)
                    {
                        tracing::error!("cannot heartbeat; stopping running work and claims");
                        self.stop_all(StopReason::LostLease);
                    }
                }
            }
        }
    }
}
