//! The sweeper: recovers RUNNING subtasks whose worker stopped heartbeating
//! or whose timeout passed, by the retry rules. Safe to run in every process
//! at once: each recovery is a fenced run ending, so only one lands.

use super::finish::{finish_batch, Finished, Outcome};
use super::{EngineConfig, Result};
use crate::model::SubtaskStatus;
use crate::store::{self, subtask::RunKey};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct Sweeper {
    pool: PgPool,
    cfg: EngineConfig,
}

impl Sweeper {
    pub fn new(pool: PgPool, cfg: EngineConfig) -> Self {
        Sweeper { pool, cfg }
    }

    /// One sweep; returns how many runs it recovered.
    pub async fn run_once(&self) -> Result<usize> {
        let dead_ms = self.cfg.dead_after.as_millis() as i64;
        let grace_ms = self.cfg.timeout_grace.as_millis() as i64;
        let lost = store::subtask::find_lost(&self.pool, dead_ms, grace_ms, 500).await?;
        let mut recovered = 0;
        for l in lost {
            let error = if l.worker_gone {
                format!(
                    "executor node restarted: worker {} stopped heartbeating",
                    l.executor
                )
            } else {
                "subtask timed out: its worker did not stop it".to_string()
            };
            tracing::warn!(subtask_id = l.id, task_id = l.task_id, run_time = l.run_time, %error, "recovering a lost run");
            let f = Finished {
                run: RunKey {
                    id: l.id,
                    run_time: l.run_time,
                    executor: l.executor.clone(),
                },
                task_id: l.task_id,
                operation: l.operation,
                retry_limit: l.retry_limit,
                class_name: l.class_name.clone(),
                outcome: Outcome::Failed {
                    error,
                    cancelled: l.status == SubtaskStatus::Canceling,
                },
            };
            // One run per transaction: a conflict on one never holds back
            // the others.
            if finish_batch(&self.pool, &self.cfg, &[f]).await?[0] {
                recovered += 1;
                crate::metrics::METRICS.sweeper_recoveries.inc();
            }
        }
        for id in store::worker::delete_dead(&self.pool, dead_ms).await? {
            tracing::info!(worker = %id, "removed the row of a dead worker");
        }
        Ok(recovered)
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
