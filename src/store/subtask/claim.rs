//! The worker's side of `subtask_instance`: the claim, reading back the runs
//! a worker holds, the cancel requests it polls, and handing a run back.

use super::super::Result;
use super::RunKey;
use crate::model::{Context, SubtaskOperation};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};

/// A run handed to a worker by the claim.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub task_id: i64,
    pub name: String,
    pub class_name: String,
    #[sqlx(try_from = "String")]
    pub operation: SubtaskOperation,
    pub run_time: i32,
    pub retry_limit: i32,
    pub timeout_s: i32,
    pub parallel_idx: i32,
    pub context: Json<Context>,
    pub trace_id: String,
    /// Seconds from READY to this claim.
    pub handoff_s: f64,
}

/// Claims up to `limit` READY subtasks whose backoff has passed, in one
/// statement: lock them with SKIP LOCKED (served by the partial index on
/// READY rows), mark them RUNNING for `executor`, and write each run's
/// opening separator line to its log.
pub async fn claim(ex: impl PgExecutor<'_>, executor: &str, limit: i64) -> Result<Vec<Claimed>> {
    Ok(sqlx::query_as(concat!(
        "with c as materialized ( \
             select id from subtask_instance \
             where status = 'READY' and run_after <= now() \
             order by run_after \
             limit $2 \
             for update skip locked \
         ), u as ( \
             update subtask_instance s \
             set status = 'RUNNING', executor = $1, start_time = now(), finish_time = null, \
                 error = null, \
                 lease_expires_at = now() + make_interval(secs => s.timeout_s) \
             from c, task_instance t \
             where s.id = c.id and t.id = s.task_id \
             returning s.id, s.task_id, s.name, s.class_name, s.operation, s.run_time, \
                 s.retry_limit, s.timeout_s, s.parallel_idx, s.context, t.trace_id, \
                 extract(epoch from now() - s.run_after)::float8 as handoff_s \
         ), l as ( \
             insert into subtask_log (subtask_id, run_time, line) \
             select id, run_time, ",
        separator_line!("$1"),
        " \
             from u \
         ) \
         select id, task_id, name, class_name, operation, run_time, retry_limit, timeout_s, \
             parallel_idx, context, trace_id, handoff_s from u",
    ))
    .bind(executor)
    .bind(limit)
    .fetch_all(ex)
    .await?)
}

/// The RUNNING or CANCELING runs `executor` holds, as the claim returns
/// them: what a worker reads back after a commit whose reply it lost.
pub async fn held_by(ex: impl PgExecutor<'_>, executor: &str) -> Result<Vec<Claimed>> {
    Ok(sqlx::query_as!(
        Claimed,
        r#"select s.id, s.task_id, s.name, s.class_name,
               s.operation as "operation: SubtaskOperation", s.run_time, s.retry_limit,
               s.timeout_s, s.parallel_idx,
               coalesce(s.context, '{}'::jsonb) as "context!: Json<Context>", t.trace_id,
               0::float8 as "handoff_s!"
           from subtask_instance s join task_instance t on t.id = s.task_id
           where s.executor = $1 and s.status in ('RUNNING', 'CANCELING')
           order by s.id"#,
        executor,
    )
    .fetch_all(ex)
    .await?)
}

/// Subtasks this worker holds that were asked to cancel.
pub async fn canceling_for(ex: impl PgExecutor<'_>, executor: &str) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar!(
        "select id from subtask_instance where executor = $1 and status = 'CANCELING'",
        executor,
    )
    .fetch_all(ex)
    .await?)
}

/// Those of `ids` whose cancel was requested (CANCELING).
pub async fn canceling_among(conn: &mut PgConnection, ids: &[i64]) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar!(
        "select s.id as \"id!\" from unnest($1::bigint[]) as v(id) \
         cross join lateral (select id, status from subtask_instance \
             where id = v.id offset 0) s \
         where s.status = 'CANCELING'",
        ids,
    )
    .fetch_all(conn)
    .await?)
}

/// Hands a run back unchanged (shutdown): READY at once, same run_time.
pub async fn release(conn: &mut PgConnection, run: &RunKey) -> Result<bool> {
    let done = sqlx::query!(
        "update subtask_instance set status = 'READY', run_after = clock_timestamp(), executor = null, \
             lease_expires_at = null \
         where id = $1 and run_time = $2 and executor = $3 and status = 'RUNNING'",
        run.id,
        run.run_time,
        &run.executor,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
