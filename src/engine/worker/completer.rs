//! The completer: writes finished runs in batches and starts, in the slots a
//! batch frees, the successors its statement made RUNNING for this worker.
//! It never drops a result: a write that fails for the connection is
//! retried, and before each retry the worker reads back the rows it is
//! executor of (a commit whose reply was lost may have landed, and started
//! successors for it); a batch PostgreSQL refuses is split so the run at
//! fault is isolated, and that run is stored as a failure naming why.

use super::{RunResult, StopReason, Worker};
use crate::engine::finish::{finish_and_start, Finished, Outcome};
use crate::store::{self, subtask::Claimed};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

impl Worker {
    /// Writes finished runs in batches until every sender is gone. The
    /// subtasks a batch makes runnable start here at once, in the slots the
    /// batch frees, unless the worker is stopping; their results come back
    /// through `tx` (weak, so that the channel closes once the claim loop
    /// and every run are done).
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
                    RunResult::Abandon(key) => self.release_slot(key),
                }
            }
            self.write_batch(writes, &tx).await;
        }
    }

    /// Writes one batch, however long the database takes to answer.
    async fn write_batch(
        &self,
        mut writes: Vec<Finished>,
        tx: &mpsc::WeakUnboundedSender<RunResult>,
    ) {
        let mut attempt = 0u32;
        let mut stopped_at: Option<Instant> = None;
        while !writes.is_empty() {
            let i = &self.inner;
            let stopping = i.stopping.load(Ordering::Relaxed);
            let start = if stopping || !i.healthy.load(Ordering::Relaxed) {
                0
            } else {
                writes.len()
            };
            match finish_and_start(&i.pool, &i.cfg, &writes, &i.id, start).await {
                Ok((_, started)) => {
                    self.start_runs(started, tx);
                    break;
                }
                Err(e) if e.is_transient() => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, runs = writes.len(), "finishing runs failed; retrying");
                    if stopping {
                        let since = *stopped_at.get_or_insert_with(Instant::now);
                        if since.elapsed() >= i.cfg.shutdown_grace {
                            tracing::error!(
                                runs = writes.len(),
                                "stopping and the database does not answer: leaving these runs to the sweeper"
                            );
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt.min(10))))
                        .await;
                    // The commit may have landed with its reply lost.
                    match self.read_back(&mut writes, tx).await {
                        Ok(()) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "read-back failed; retrying the write")
                        }
                    }
                }
                Err(e) if writes.len() > 1 => {
                    tracing::warn!(error = %e, runs = writes.len(), "a batch was refused; writing its runs one by one");
                    for f in std::mem::take(&mut writes) {
                        Box::pin(self.write_batch(vec![f], tx)).await;
                    }
                    return;
                }
                Err(e) => {
                    let f = &mut writes[0];
                    let why = format!("the run's result could not be stored: {e}");
                    if matches!(&f.outcome, Outcome::Failed { error, .. } if *error == why) {
                        tracing::error!(subtask_id = f.run.id, run_time = f.run.run_time, error = %e,
                            "even the failure of this run cannot be stored; the sweeper will recover it");
                        break;
                    }
                    tracing::error!(subtask_id = f.run.id, run_time = f.run.run_time, error = %e,
                        "PostgreSQL refuses this run's result; storing it as a failure");
                    f.outcome = Outcome::Failed {
                        error: why,
                        cancelled: false,
                    };
                }
            }
        }
        for f in &writes {
            self.release_slot((f.run.id, f.run.run_time));
        }
    }

    /// Reads back the runs this worker is executor of: drops from `writes`
    /// those no longer ours to write (a lost commit wrote them, or they
    /// were recovered elsewhere), and runs what a lost commit started for
    /// this worker.
    async fn read_back(
        &self,
        writes: &mut Vec<Finished>,
        tx: &mpsc::WeakUnboundedSender<RunResult>,
    ) -> crate::engine::Result<()> {
        let adopted = self.adopt().await?;
        let held: HashSet<(i64, i32)> = adopted.held;
        writes.retain(|f| {
            let ours = held.contains(&(f.run.id, f.run.run_time));
            if !ours {
                tracing::info!(
                    subtask_id = f.run.id,
                    run_time = f.run.run_time,
                    "read back: this run's end is already written (or it is no longer ours)"
                );
                self.release_slot((f.run.id, f.run.run_time));
            }
            ours
        });
        self.start_runs_held(adopted.orphans, tx);
        Ok(())
    }

    /// Reads the runs held by this worker in the database and holds those
    /// it was not running (started by a commit whose reply was lost).
    pub(super) async fn adopt(&self) -> crate::engine::Result<Adopted> {
        let _gate = self.inner.claim_gate.write().await;
        let rows = store::subtask::held_by(&self.inner.pool, &self.inner.id).await?;
        let held = rows.iter().map(|c| (c.id, c.run_time)).collect();
        let orphans: Vec<Claimed> = rows
            .into_iter()
            .filter(|c| self.slot((c.id, c.run_time)).is_none())
            .collect();
        if !orphans.is_empty() {
            tracing::warn!(runs = orphans.len(), "read back runs started for this worker by a commit whose reply was lost; running them");
            self.hold(&orphans);
        }
        Ok(Adopted { held, orphans })
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
        self.start_runs_held(started, tx);
    }

    /// Runs held runs; hands them back at once if shutdown began.
    fn start_runs_held(&self, started: Vec<Claimed>, tx: &mpsc::WeakUnboundedSender<RunResult>) {
        if self.inner.stopping.load(Ordering::Relaxed) {
            // Shutdown began while the batch was being written: hand these
            // back at once instead of starting new work.
            for c in &started {
                if let Some(slot) = self.slot((c.id, c.run_time)) {
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
                    self.release_slot((c.id, c.run_time));
                }
            }
        }
    }
}

/// What a read-back found.
pub(super) struct Adopted {
    /// Every run the database says this worker holds.
    pub held: HashSet<(i64, i32)>,
    /// Those it was not running; now held, for the caller to run.
    pub orphans: Vec<Claimed>,
}
