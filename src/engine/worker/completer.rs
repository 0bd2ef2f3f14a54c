//! The completer: writes finished runs in batches and starts, in the slots a
//! batch frees, the successors its statement made RUNNING for this worker.

use super::{RunResult, StopReason, Worker};
use crate::engine::finish::finish_and_start;
use crate::store::subtask::Claimed;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;

impl Worker {
    /// Writes finished runs in batches; retries a failed write until it
    /// lands or the run is no longer ours (then the sweeper recovers it).
    /// The subtasks a batch makes runnable start here at once, in the slots
    /// the batch frees, unless the worker is stopping; their results come
    /// back through `tx` (weak, so that the channel closes once the claim
    /// loop and every run are done).
    pub(super) async fn finisher(
        self,
        mut rx: mpsc::UnboundedReceiver<RunResult>,
        tx: mpsc::WeakUnboundedSender<RunResult>,
    ) {
        let max = self.inner.cfg.finish_batch;
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < max {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let mut writes = Vec::new();
            for r in batch {
                match r {
                    RunResult::Write(f) => writes.push(f),
                    RunResult::Abandon(id) => self.release_slot(id),
                }
            }
            let mut attempt = 0u32;
            loop {
                let i = &self.inner;
                let start =
                    if i.stopping.load(Ordering::Relaxed) || !i.healthy.load(Ordering::Relaxed) {
                        0
                    } else {
                        writes.len()
                    };
                match finish_and_start(&i.pool, &i.cfg, &writes, &i.id, start).await {
                    Ok((_, started)) => {
                        self.start_runs(started, &tx);
                        break;
                    }
                    Err(e) => {
                        attempt += 1;
                        tracing::warn!(error = %e, attempt, "finishing runs failed; retrying");
                        if attempt >= 30 {
                            tracing::error!(
                                runs = writes.len(),
                                "giving up on writing these runs; the sweeper will recover them"
                            );
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt.min(10))))
                            .await;
                    }
                }
            }
            for f in &writes {
                self.release_slot(f.run.id);
            }
        }
    }

    /// Runs the subtasks the finisher started, like claimed ones.
    fn start_runs(&self, started: Vec<Claimed>, tx: &mpsc::WeakUnboundedSender<RunResult>) {
        if started.is_empty() {
            return;
        }
        let m = &crate::metrics::METRICS;
        for c in &started {
            m.claimed
                .with_label_values(&[crate::metrics::class_label(&c.class_name)])
                .inc();
            m.handoff.with_label_values(&[]).observe(0.0);
        }
        self.hold(&started);
        if self.inner.stopping.load(Ordering::Relaxed) {
            // Shutdown began while the batch was being written: hand these
            // back at once instead of starting new work.
            for c in &started {
                if let Some(slot) = self.slot(c.id) {
                    slot.stop(StopReason::Shutdown);
                }
            }
        }
        for c in started {
            match tx.upgrade() {
                Some(tx) => self.spawn_run(c, tx),
                // Every sender is gone only once the worker has stopped:
                // its row is removed and the sweeper recovers the run.
                None => {
                    tracing::warn!(
                        subtask_id = c.id,
                        "result channel closed; leaving the run to the sweeper"
                    );
                    self.release_slot(c.id);
                }
            }
        }
    }
}
