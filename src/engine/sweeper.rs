//! The sweeper: recovers RUNNING subtasks whose worker is dead or whose
//! timeout passed, by the retry rules. A worker is dead only once this
//! sweeper has itself watched its heartbeat not advance for dead-after
//! while the sweeper was connected, so an outage that silenced everyone
//! kills no one. The verdict is fenced on the heartbeat it watched and
//! written with the recovery in one transaction. Safe to run in every
//! process at once: one pass owns a row at a time, each recovery is a
//! fenced run ending, and a bad row never stops a pass.

use super::finish::{finish_in, Finished, Outcome, Promotion};
use super::{EngineConfig, Result};
use crate::model::SubtaskStatus;
use crate::store::{self, subtask::LostRun, subtask::RunKey};
use chrono::{DateTime, Utc};
use sqlx::{Connection, PgPool};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct Sweeper {
    pool: PgPool,
    cfg: EngineConfig,
    watch: Arc<Mutex<Watch>>,
}

/// What this sweeper has seen of the workers' heartbeats.
#[derive(Default)]
struct Watch {
    /// Per worker: the heartbeat last read, and since when (by this
    /// process's clock) it has not changed.
    workers: HashMap<String, (DateTime<Utc>, Instant)>,
    /// When the last read of the heartbeats came back.
    last_look: Option<Instant>,
}

impl Watch {
    /// Takes in a fresh read; returns the workers silent for `dead_after`
    /// of watching, with the heartbeat each was silent at. A gap longer
    /// than `gap` since the last read (an outage, a stall of this process)
    /// starts the watch over: time not watched never counts.
    fn look(
        &mut self,
        rows: Vec<(String, DateTime<Utc>)>,
        now: Instant,
        gap: Duration,
        dead_after: Duration,
    ) -> Vec<(String, DateTime<Utc>)> {
        if self.last_look.is_none_or(|t| now.duration_since(t) > gap) {
            self.workers.clear();
        }
        self.last_look = Some(now);
        let mut next = HashMap::with_capacity(rows.len());
        let mut dead = Vec::new();
        for (id, beat) in rows {
            let since = match self.workers.get(&id) {
                Some(&(seen, since)) if seen == beat => since,
                _ => now,
            };
            if now.duration_since(since) >= dead_after {
                dead.push((id.clone(), beat));
            }
            next.insert(id, (beat, since));
        }
        self.workers = next;
        dead
    }

    /// The connection failed: nothing is being watched.
    fn lost_sight(&mut self) {
        self.workers.clear();
        self.last_look = None;
    }
}

impl Sweeper {
    pub fn new(pool: PgPool, cfg: EngineConfig) -> Self {
        Sweeper {
            pool,
            cfg,
            watch: Arc::default(),
        }
    }

    fn watch(&self) -> std::sync::MutexGuard<'_, Watch> {
        self.watch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One sweep; returns how many runs it recovered. A failing recovery is
    /// logged and the pass goes on with the next.
    pub async fn run_once(&self) -> Result<usize> {
        let rows = match store::worker::heartbeats(&self.pool).await {
            Ok(rows) => rows,
            Err(e) => {
                self.watch().lost_sight();
                return Err(e.into());
            }
        };
        let gap = self.cfg.dead_after.max(self.cfg.sweep_interval * 2);
        let dead = self
            .watch()
            .look(rows, Instant::now(), gap, self.cfg.dead_after);
        let mut recovered = 0;
        for (worker, seen) in dead {
            match self.recover_worker(&worker, seen).await {
                Ok(Some(n)) => recovered += n,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(worker = %worker, error = %e, "could not recover a dead worker's runs; next pass")
                }
            }
        }
        let grace_ms = self.cfg.timeout_grace.as_millis() as i64;
        let lost = store::subtask::find_lost(&self.pool, grace_ms, 500).await?;
        for l in lost {
            match self.recover_run(&l).await {
                Ok(true) => recovered += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(subtask_id = l.id, run_time = l.run_time, error = %e, "could not recover a lost run; next pass")
                }
            }
        }
        Ok(recovered)
    }

    /// Declares `worker` dead if its heartbeat is still `seen`, and
    /// recovers its runs, in one transaction. None when the worker
    /// heartbeated since (or another sweeper got there first). A run whose
    /// recovery fails is left for the next pass (its executor has no row
    /// any more), the others are recovered.
    pub async fn recover_worker(&self, worker: &str, seen: DateTime<Utc>) -> Result<Option<usize>> {
        let mut tx = self.pool.begin().await?;
        if !store::worker::remove_if_silent(&mut tx, worker, seen).await? {
            return Ok(None);
        }
        tracing::warn!(worker = %worker, "worker declared dead: its heartbeat did not advance while watched");
        let mut recovered = 0;
        for l in store::subtask::runs_of(&mut tx, worker).await? {
            let mut one = tx.begin().await?;
            match finish_in(
                &mut one,
                &self.cfg,
                &[lost_finish(&l)],
                "",
                0,
                Promotion::InStatement,
            )
            .await
            {
                Ok((applied, _)) => {
                    one.commit().await?;
                    if applied[0] {
                        recovered += 1;
                        crate::metrics::METRICS.sweeper_recoveries.inc();
                    }
                }
                Err(e) => {
                    tracing::warn!(subtask_id = l.id, error = %e, "could not recover a run; next pass");
                    one.rollback().await?;
                }
            }
        }
        tx.commit().await?;
        Ok(Some(recovered))
    }

    /// Recovers one run whose executor is gone or whose timeout passed, if
    /// no other sweeper pass owns it now.
    async fn recover_run(&self, l: &LostRun) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        if !store::subtask::try_own_for_sweep(&mut tx, l.id).await? {
            return Ok(false);
        }
        let (applied, _) = finish_in(
            &mut tx,
            &self.cfg,
            &[lost_finish(l)],
            "",
            0,
            Promotion::InStatement,
        )
        .await?;
        tx.commit().await?;
        if applied[0] {
            crate::metrics::METRICS.sweeper_recoveries.inc();
        }
        Ok(applied[0])
    }

    /// Sweeps every `sweep_interval` until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.cfg.sweep_interval) => {}
            }
            if let Err(e) = self.run_once().await {
                tracing::warn!(error = %e, "sweep failed; will retry");
            }
        }
    }
}

/// The ending the sweeper writes for a lost run: lost with its worker (a
/// retry is claimable at once), or failed for its timeout.
fn lost_finish(l: &LostRun) -> Finished {
    let cancelled = l.status == SubtaskStatus::Canceling;
    let outcome = if l.worker_gone {
        Outcome::Lost {
            error: format!(
                "executor node restarted: worker {} stopped heartbeating",
                l.executor
            ),
            cancelled,
        }
    } else {
        Outcome::Failed {
            error: "subtask timed out: its worker did not stop it".to_string(),
            cancelled,
        }
    };
    tracing::warn!(
        subtask_id = l.id,
        task_id = l.task_id,
        run_time = l.run_time,
        "recovering a lost run"
    );
    Finished {
        run: RunKey {
            id: l.id,
            run_time: l.run_time,
            executor: l.executor.clone(),
        },
        task_id: l.task_id,
        operation: l.operation,
        retry_limit: l.retry_limit,
        class_name: l.class_name.clone(),
        outcome,
    }
}
