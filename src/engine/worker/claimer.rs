//! The producer: claims READY subtasks up to the worker's free slots, as
//! often as notifications, freed slots or the poll interval say, and starts
//! their runs.

use super::{RunResult, Worker};
use crate::engine::Result;
use crate::store::{self, subtask::Claimed};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

impl Worker {
    /// Claims up to `limit` runs. The claimed runs are registered as
    /// running; the caller runs them.
    pub(super) async fn claim(&self, limit: usize) -> Result<Vec<Claimed>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let _gate = self.inner.claim_gate.read().await;
        let claimed = store::subtask::claim(&self.inner.pool, &self.inner.id, limit as i64).await?;
        if !claimed.is_empty() {
            let m = &crate::metrics::METRICS;
            m.claim_batch
                .with_label_values(&[])
                .observe(claimed.len() as f64);
            for c in &claimed {
                m.claimed
                    .with_label_values(&[crate::metrics::class_label(&c.class_name)])
                    .inc();
                m.handoff
                    .with_label_values(&[])
                    .observe(c.handoff_s.max(0.0));
            }
        }
        self.hold(&claimed);
        Ok(claimed)
    }

    /// Claims and starts runs until `shutdown` fires. Claims nothing while
    /// the heartbeat is failing; backs off after claim errors.
    pub(super) async fn claim_loop(
        &self,
        shutdown: &CancellationToken,
        tx: &mpsc::UnboundedSender<RunResult>,
    ) {
        let inner = &self.inner;
        let mut claim_errors = 0u32;
        while !shutdown.is_cancelled() {
            let mut full = false;
            if inner.healthy.load(Ordering::Relaxed) {
                let free = self.free_slots();
                match self.claim(free).await {
                    Ok(claimed) => {
                        claim_errors = 0;
                        full = free > 0 && claimed.len() == free;
                        for c in claimed {
                            self.spawn_run(c, tx.clone());
                        }
                    }
                    Err(e) => {
                        claim_errors += 1;
                        tracing::warn!(error = %e, "claim failed; will retry");
                        // The claim may have committed with its reply lost:
                        // run what the database says this worker holds.
                        if let Ok(adopted) = self.adopt().await {
                            for c in adopted.orphans {
                                self.spawn_run(c, tx.clone());
                            }
                        }
                    }
                }
            }
            if full && self.free_slots() > 0 {
                continue;
            }
            let pause = if claim_errors > 0 {
                inner
                    .cfg
                    .poll_interval
                    .max(Duration::from_millis(100 * u64::from(claim_errors.min(20))))
            } else {
                inner.cfg.poll_interval
            };
            tokio::select! {
                _ = inner.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }
}
