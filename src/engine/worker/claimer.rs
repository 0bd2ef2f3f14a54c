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
    /// the heartbeat is failing; backs off after claim errors. A claim that
    /// filled every free slot is followed by another at once; one that left
    /// slots free marks the worker idle (so that commits making subtasks
    /// READY notify it) and claims once more before it waits; one that
    /// fills the slots again marks it busy.
    pub(super) async fn claim_loop(
        &self,
        shutdown: &CancellationToken,
        tx: &mpsc::UnboundedSender<RunResult>,
    ) {
        let inner = &self.inner;
        let mut claim_errors = 0u32;
        while !shutdown.is_cancelled() {
            let mut again = false;
            if inner.healthy.load(Ordering::Relaxed) {
                let free = self.free_slots();
                match self.claim(free).await {
                    Ok(claimed) => {
                        claim_errors = 0;
                        let full = free > 0 && claimed.len() == free;
                        for c in claimed {
                            self.spawn_run(c, tx.clone());
                        }
                        again = if full {
                            self.mark_idle(false).await;
                            self.free_slots() > 0
                        } else {
                            free > 0 && self.mark_idle(true).await
                        };
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
            if again {
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

    /// Writes this worker's idle mark when it changes (only in the `idle`
    /// wake-up mode, and idle only while LISTEN is up). True when it was
    /// just marked idle: the caller claims once more, since rows made READY
    /// before the mark may not have notified.
    async fn mark_idle(&self, idle: bool) -> bool {
        let inner = &self.inner;
        if store::wake_mode() != store::Wake::Idle
            || inner.marked_idle.load(Ordering::Relaxed) == idle
            || (idle && !inner.listening.load(Ordering::Relaxed))
        {
            return false;
        }
        match store::worker::mark_idle(&inner.pool, &inner.id, idle).await {
            Ok(()) => {
                inner.marked_idle.store(idle, Ordering::Relaxed);
                idle
            }
            Err(e) => {
                // Not marked idle: notifications may skip this worker, and
                // polling finds its work. Not marked busy: it is notified
                // more than needed.
                tracing::debug!(error = %e, idle, "could not write the idle mark");
                false
            }
        }
    }
}
