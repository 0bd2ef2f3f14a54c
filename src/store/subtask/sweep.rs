//! The sweeper's statements on `subtask_instance`: finding runs whose worker
//! is gone or whose timeout passed, and the per-run claim of one pass.

use super::super::Result;
use crate::model::{SubtaskOperation, SubtaskStatus};
use sqlx::{PgConnection, PgExecutor};

/// A run the sweeper must recover.
#[derive(Debug, Clone)]
pub struct LostRun {
    pub id: i64,
    pub task_id: i64,
    pub run_time: i32,
    pub retry_limit: i32,
    pub class_name: String,
    pub executor: String,
    pub status: SubtaskStatus,
    pub operation: SubtaskOperation,
    /// True when its worker is gone; false when only its timeout passed.
    pub worker_gone: bool,
}

/// RUNNING or CANCELING runs whose executor has no worker row (it was
/// declared dead, or stopped without handing them back), or whose timeout
/// passed more than `grace_ms` ago.
pub async fn find_lost(ex: impl PgExecutor<'_>, grace_ms: i64, limit: i64) -> Result<Vec<LostRun>> {
    Ok(sqlx::query_as!(
        LostRun,
        r#"select s.id, s.task_id, s.run_time, s.retry_limit, s.class_name,
               s.executor as "executor!", s.status as "status: SubtaskStatus",
               s.operation as "operation: SubtaskOperation", w.id is null as "worker_gone!"
           from subtask_instance s
           left join worker w on w.id = s.executor
           where s.status in ('RUNNING', 'CANCELING')
             and (w.id is null
                  or s.lease_expires_at < now() - make_interval(secs => $1::float8 / 1000))
           order by s.id limit $2"#,
        grace_ms as f64,
        limit,
    )
    .fetch_all(ex)
    .await?)
}

/// The RUNNING or CANCELING runs of one worker, in task order (the order
/// their task rows are locked in).
pub async fn runs_of(conn: &mut PgConnection, executor: &str) -> Result<Vec<LostRun>> {
    Ok(sqlx::query_as!(
        LostRun,
        r#"select s.id, s.task_id, s.run_time, s.retry_limit, s.class_name,
               s.executor as "executor!", s.status as "status: SubtaskStatus",
               s.operation as "operation: SubtaskOperation", true as "worker_gone!"
           from subtask_instance s
           where s.executor = $1 and s.status in ('RUNNING', 'CANCELING')
           order by s.task_id, s.id"#,
        executor,
    )
    .fetch_all(conn)
    .await?)
}

/// Takes the sweeper's claim on one run for this transaction, without
/// waiting: false when another sweeper pass holds it now.
pub async fn try_own_for_sweep(conn: &mut PgConnection, id: i64) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"select pg_try_advisory_xact_lock($1, ($2::bigint % 2147483647)::int) as "owned!""#,
        SWEEP_LOCK_CLASS,
        id,
    )
    .fetch_one(conn)
    .await?)
}

/// The advisory-lock class of the sweeper's per-run claims (`'swep'`).
const SWEEP_LOCK_CLASS: i32 = 0x7377_6570;
