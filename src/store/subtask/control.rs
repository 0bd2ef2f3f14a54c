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
/// are queued for their turn (`rollback_queued`), to become READY within the
/// concurrency limit ([`rollback_turns`]). Failed subtasks that never
/// started need no undoing and go straight back to PENDING. Returns how
/// many were queued.
pub async fn start_rollback(conn: &mut PgConnection, task: TaskId) -> Result<u64> {
    sqlx::query(
        "update subtask_instance set status = 'PENDING', operation = 'ROLLBACK' \
         where task_id = $1 and status = 'FAILED' and start_time is null",
    )
    .bind(task.0)
    .execute(&mut *conn)
    .await?;
    let queued: Vec<bool> = sqlx::query_scalar(
        "update subtask_instance s set operation = 'ROLLBACK', \
             pending_downstreams = x.n, \
             rollback_queued = x.n = 0 and s.status in ('SUCCESSFUL', 'FAILED') \
         from (select s.id, (select count(*) from subtask_edge e \
                   join subtask_instance d on d.id = e.downstream_id \
                   where e.upstream_id = s.id and d.status <> 'PENDING')::int as n \
               from subtask_instance s where s.task_id = $1 and s.status <> 'PENDING') x \
         where s.id = x.id \
         returning s.rollback_queued",
    )
    .bind(task.0)
    .fetch_all(&mut *conn)
    .await?;
    Ok(queued.iter().filter(|q| **q).count() as u64)
}

/// After `id` was rolled back (or rollback-skipped): its upstreams have one
/// downstream less to wait for; those with none left are queued for their
/// rollback turn. Returns how many were queued.
pub async fn rollback_upstreams(conn: &mut PgConnection, id: i64) -> Result<u64> {
    let queued: Vec<bool> = sqlx::query_scalar(
        "update subtask_instance u \
         set pending_downstreams = u.pending_downstreams - 1, \
             rollback_queued = u.pending_downstreams = 1 \
         from subtask_edge e \
         where e.downstream_id = $1 and u.id = e.upstream_id \
           and u.status in ('SUCCESSFUL', 'FAILED') and u.operation = 'ROLLBACK' \
           and u.pending_downstreams > 0 \
         returning u.rollback_queued",
    )
    .bind(id)
    .fetch_all(conn)
    .await?;
    Ok(queued.iter().filter(|q| **q).count() as u64)
}

/// Up to `free` subtasks queued for their rollback turn of each (task,
/// free) pair, the last in series order first, as (id, task_id, run_time).
pub async fn queued_rollbacks(
    conn: &mut PgConnection,
    tasks: &[i64],
    free: &[i64],
) -> Result<Vec<(i64, i64, i32)>> {
    Ok(sqlx::query_as(
        // Read from the partial index on queued rows, per task.
        "select w.id, v.task_id, w.run_time \
         from unnest($1::bigint[], $2::bigint[]) as v(task_id, free) \
         cross join lateral ( \
             select s.id, s.run_time, s.series_id from subtask_instance s \
             where s.task_id = v.task_id and s.rollback_queued \
             order by s.series_id desc limit v.free \
         ) w order by v.task_id, w.series_id desc",
    )
    .bind(tasks)
    .bind(free)
    .fetch_all(conn)
    .await?)
}

/// Queued rollbacks take their turn: READY now with the next run_time,
/// fenced on (id, run_time, queued). Returns the task of each one made
/// READY.
pub async fn take_rollback_turns(
    conn: &mut PgConnection,
    ids: &[i64],
    run_times: &[i32],
) -> Result<Vec<i64>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(
        "update subtask_instance s set status = 'READY', run_time = s.run_time + 1, \
             run_after = now(), error = null, rollback_queued = false \
         from unnest($1::bigint[], $2::int[]) as v(id, rt) \
         where s.id = v.id and s.run_time = v.rt and s.rollback_queued \
           and s.status in ('SUCCESSFUL', 'FAILED') and s.operation = 'ROLLBACK' \
         returning s.task_id",
    )
    .bind(ids)
    .bind(run_times)
    .fetch_all(conn)
    .await?)
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
