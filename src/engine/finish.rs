//! Finishing runs: one short transaction per batch that ends each run fenced
//! on (id, run_time, executor, status), promotes downstreams (or, rolling
//! back, upstreams) and settles the task.

use super::{EngineConfig, Result};
use crate::model::transitions::{self, AfterFailure};
use crate::model::{Context, SubtaskOperation, SubtaskStatus, TaskId, TaskOperation, TaskStatus};
use crate::store::{self, subtask::RunEnd, subtask::RunKey, task::TaskRow};
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeMap;

/// How a run ended, as the worker (or the sweeper) saw it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The action succeeded; this is its context with the keys it added.
    Succeeded(Context),
    /// The action failed; `cancelled` runs are never retried.
    Failed { error: String, cancelled: bool },
    /// The worker is shutting down: hand the run back untouched.
    Release,
}

/// A finished run to write.
#[derive(Debug, Clone)]
pub struct Finished {
    pub run: RunKey,
    pub task_id: i64,
    pub operation: SubtaskOperation,
    pub retry_limit: i32,
    pub class_name: String,
    pub outcome: Outcome,
}

/// Writes finished runs in one transaction, tasks locked in id order.
/// Returns, per run, whether it was applied (false: the run was fenced out,
/// its result dropped).
pub async fn finish_batch(
    pool: &PgPool,
    cfg: &EngineConfig,
    items: &[Finished],
) -> Result<Vec<bool>> {
    let mut by_task: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, f) in items.iter().enumerate() {
        by_task.entry(f.task_id).or_default().push(i);
    }
    let task_ids: Vec<i64> = by_task.keys().copied().collect();
    let mut applied = vec![false; items.len()];
    let mut tx = pool.begin().await?;
    let tasks = store::task::lock_many(&mut tx, &task_ids).await?;
    let mut notify = false;
    for mut task in tasks {
        let mut changed = false;
        for &i in &by_task[&task.id] {
            if end_one(&mut tx, cfg, &items[i], &mut notify).await? {
                applied[i] = true;
                changed = true;
            }
        }
        if changed {
            notify |= after_change(&mut tx, &mut task).await?;
        }
    }
    if notify {
        store::notify_ready(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(applied)
}

/// Ends one run under its (already locked) task. Returns false when fenced out.
async fn end_one(
    conn: &mut PgConnection,
    cfg: &EngineConfig,
    f: &Finished,
    notify: &mut bool,
) -> Result<bool> {
    let rolling_back = f.operation == SubtaskOperation::Rollback;
    let end = match &f.outcome {
        Outcome::Release => {
            let done = store::subtask::release(conn, &f.run).await?;
            *notify |= done;
            return Ok(done);
        }
        Outcome::Succeeded(_) if rolling_back => RunEnd {
            status: SubtaskStatus::Pending,
            operation: SubtaskOperation::Rollback,
            run_time: f.run.run_time,
            context: None,
            error: None,
            backoff_ms: 0,
        },
        Outcome::Succeeded(ctx) => RunEnd {
            status: SubtaskStatus::Successful,
            operation: f.operation,
            run_time: f.run.run_time,
            context: Some(ctx.clone()),
            error: None,
            backoff_ms: 0,
        },
        Outcome::Failed { error, cancelled } => match transitions::after_failure(
            f.run.run_time,
            f.retry_limit,
            *cancelled,
            cfg.retry_backoff,
            cfg.retry_backoff_cap,
        ) {
            AfterFailure::Retry { run_time, backoff } => RunEnd {
                status: SubtaskStatus::Ready,
                operation: if rolling_back {
                    SubtaskOperation::Rollback
                } else {
                    SubtaskOperation::Retry
                },
                run_time,
                context: None,
                error: Some(error.clone()),
                backoff_ms: backoff.as_millis() as i64,
            },
            AfterFailure::Fail => RunEnd {
                status: SubtaskStatus::Failed,
                operation: if *cancelled {
                    SubtaskOperation::Cancel
                } else {
                    f.operation
                },
                run_time: f.run.run_time,
                context: None,
                error: Some(error.clone()),
                backoff_ms: 0,
            },
        },
    };
    if !store::subtask::end_run(conn, &f.run, &end).await? {
        tracing::info!(
            subtask_id = f.run.id,
            run_time = f.run.run_time,
            "run was fenced out; its result is dropped"
        );
        return Ok(false);
    }
    let class = crate::metrics::class_label(&f.class_name);
    let m = &crate::metrics::METRICS;
    m.finished.with_label_values(&[class]).inc();
    match end.status {
        SubtaskStatus::Failed => m.failed.with_label_values(&[class]).inc(),
        SubtaskStatus::Ready => m.retried.with_label_values(&[class]).inc(),
        _ => {}
    }
    match end.status {
        SubtaskStatus::Successful => store::subtask::decrement_downstreams(conn, f.run.id).await?,
        SubtaskStatus::Pending => {
            *notify |= store::subtask::rollback_upstreams(conn, f.run.id).await? > 0;
        }
        SubtaskStatus::Ready => *notify = true,
        _ => {}
    }
    Ok(true)
}

/// After any change to a RUNNING task's subtasks: fill free concurrency
/// slots with subtasks whose upstreams are done, then settle the task if
/// nothing is left to run. Returns true when subtasks became READY.
pub(crate) async fn after_change(conn: &mut PgConnection, task: &mut TaskRow) -> Result<bool> {
    if task.status != TaskStatus::Running {
        return Ok(false);
    }
    let id = TaskId(task.id);
    let mut counts = store::subtask::status_counts(conn, id).await?;
    let mut promoted = 0;
    if task.operation != TaskOperation::Rollback && counts.pending > 0 {
        let free = i64::from(task.max_concurrency) - counts.active();
        if free > 0 {
            let (ready, failed) = promote(conn, task, free).await?;
            counts.pending -= ready + failed;
            counts.ready += ready;
            counts.failed += failed;
            promoted = ready;
        }
    }
    if let Some(status) = transitions::settle(task.operation, counts) {
        store::task::set_state(conn, id, status, task.operation).await?;
        task.status = status;
        tracing::info!(task_id = task.id, status = %status, operation = %task.operation, "task settled");
    }
    Ok(promoted > 0)
}

/// Makes up to `limit` waiting subtasks READY with the merge of their
/// upstreams' contexts (the task's context for roots). A subtask whose
/// upstreams disagree fails instead. Returns (made ready, failed).
async fn promote(conn: &mut PgConnection, task: &TaskRow, limit: i64) -> Result<(i64, i64)> {
    let candidates = store::subtask::waiting_for_slot(conn, TaskId(task.id), limit).await?;
    if candidates.is_empty() {
        return Ok((0, 0));
    }
    let ids: Vec<i64> = candidates.iter().map(|c| c.0).collect();
    let mut inputs: BTreeMap<i64, Vec<Context>> = BTreeMap::new();
    for (down, ctx) in store::subtask::upstream_contexts(conn, &ids).await? {
        inputs
            .entry(down)
            .or_default()
            .push(ctx.map(|c| c.0).unwrap_or_default());
    }
    let mut ready_ids = Vec::new();
    let mut ready_ctx = Vec::new();
    let mut failed = 0;
    for (id, parallel_idx) in candidates {
        let merged = match inputs.get(&id) {
            None => Ok(task.context.0.clone()),
            Some(ups) => Context::merge_all(ups),
        };
        match merged {
            Ok(mut ctx) => {
                ctx.parallel = parallel_idx >= 0;
                ctx.parallel_idx = parallel_idx;
                ready_ids.push(id);
                ready_ctx.push(ctx);
            }
            Err(conflict) => {
                store::subtask::fail_pending(conn, id, &conflict.to_string()).await?;
                failed += 1;
            }
        }
    }
    let ready = if ready_ids.is_empty() {
        0
    } else {
        store::subtask::make_ready(conn, &ready_ids, &ready_ctx).await? as i64
    };
    Ok((ready, failed))
}
