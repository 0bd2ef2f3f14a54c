//! The user actions' statements on `subtask_instance`: retry, rollback,
//! skip and cancel, each fenced on the status it expects.

use super::super::Result;
use crate::model::{SubtaskOperation, SubtaskStatus, TaskId};
use sqlx::PgConnection;

/// FAILED subtasks of a task (or just `only`) become PENDING/RETRY with the
/// next run_time, to be promoted within the concurrency limit.
pub async fn requeue_failed(
    conn: &mut PgConnection,
    task: TaskId,
    only: Option<i64>,
) -> Result<u64> {
    let done = sqlx::query!(
        "update subtask_instance set status = 'PENDING', operation = 'RETRY', \
             run_time = run_time + 1, error = null \
         where task_id = $1 and status = 'FAILED' and ($2::bigint is null or id = $2)",
        task.0,
        only,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// True when a started subtask of the task forbids rollback.
pub async fn rollback_prohibited(conn: &mut PgConnection, task: TaskId) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        "select exists (select 1 from subtask_instance \
             where task_id = $1 and prohibit_rollback and start_time is not null) \
             as \"prohibited!\"",
        task.0,
    )
    .fetch_one(conn)
    .await?)
}

/// Starts (or resumes) a rollback: every subtask that ran takes operation
/// ROLLBACK and counts its downstreams still to undo; those with none left
/// become READY. Failed subtasks that never started need no undoing and go
/// straight back to PENDING. Returns how many became READY.
pub async fn start_rollback(conn: &mut PgConnection, task: TaskId) -> Result<u64> {
    sqlx::query!(
        "update subtask_instance set status = 'PENDING', operation = 'ROLLBACK' \
         where task_id = $1 and status = 'FAILED' and start_time is null",
        task.0,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "update subtask_instance s set operation = 'ROLLBACK', \
             pending_downstreams = (select count(*) from subtask_edge e \
                 join subtask_instance d on d.id = e.downstream_id \
                 where e.upstream_id = s.id and d.status <> 'PENDING') \
         where s.task_id = $1 and s.status <> 'PENDING'",
        task.0,
    )
    .execute(&mut *conn)
    .await?;
    let done = sqlx::query!(
        "update subtask_instance set status = 'READY', run_time = run_time + 1, \
             run_after = now(), error = null \
         where task_id = $1 and status in ('SUCCESSFUL', 'FAILED') and pending_downstreams = 0",
        task.0,
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// After `id` was rolled back (or rollback-skipped): its upstreams have one
/// downstream less to wait for; those with none left become READY to roll
/// back. Returns how many became READY.
pub async fn rollback_upstreams(conn: &mut PgConnection, id: i64) -> Result<u64> {
    // One statement: a row updated by a data-modifying CTE cannot be
    // updated again by the outer query.
    let done: Vec<String> = sqlx::query_scalar!(
        "update subtask_instance u \
         set pending_downstreams = u.pending_downstreams - 1, \
             status = case when u.pending_downstreams = 1 then 'READY' else u.status end, \
             run_time = case when u.pending_downstreams = 1 then u.run_time + 1 else u.run_time end, \
             run_after = case when u.pending_downstreams = 1 then now() else u.run_after end, \
             error = case when u.pending_downstreams = 1 then null else u.error end \
         from subtask_edge e \
         where e.downstream_id = $1 and u.id = e.upstream_id \
           and u.status in ('SUCCESSFUL', 'FAILED') and u.operation = 'ROLLBACK' \
           and u.pending_downstreams > 0 \
         returning u.status",
        id,
    )
    .fetch_all(conn)
    .await?;
    Ok(done
        .iter()
        .filter(|s: &&String| s.as_str() == "READY")
        .count() as u64)
}

/// Skips a FAILED subtask: it takes `status`/`operation` without running.
pub async fn skip(
    conn: &mut PgConnection,
    id: i64,
    status: SubtaskStatus,
    operation: SubtaskOperation,
) -> Result<bool> {
    let done = sqlx::query!(
        "update subtask_instance set status = $2, operation = $3, finish_time = now(), \
             error = null \
         where id = $1 and status = 'FAILED'",
        id,
        status.as_str(),
        operation.as_str(),
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// RUNNING → CANCELING; returns the executor to tell.
pub async fn mark_canceling(conn: &mut PgConnection, id: i64) -> Result<Option<String>> {
    Ok(sqlx::query_scalar!(
        "update subtask_instance set status = 'CANCELING' \
         where id = $1 and status = 'RUNNING' returning executor as \"executor!\"",
        id,
    )
    .fetch_optional(conn)
    .await?)
}

/// READY → FAILED/CANCEL: a subtask cancelled before any worker claimed
/// it (a retry waiting out its backoff). False when it was claimed first.
pub async fn cancel_ready(conn: &mut PgConnection, id: i64) -> Result<bool> {
    let done = sqlx::query!(
        "update subtask_instance set status = 'FAILED', operation = 'CANCEL', \
             error = 'subtask canceled', finish_time = now() \
         where id = $1 and status = 'READY'",
        id,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
