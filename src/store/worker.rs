//! SQL of the `worker` aggregate: one liveness row per worker process.

use super::Result;
use sqlx::PgExecutor;

/// Inserts (or revives) this worker's row with a fresh heartbeat.
pub async fn register(
    ex: impl PgExecutor<'_>,
    id: &str,
    host: &str,
    pid: i32,
    slots: i32,
) -> Result<()> {
    sqlx::query(
        "insert into worker (id, host, pid, slots) values ($1, $2, $3, $4) \
         on conflict (id) do update set heartbeat_at = now()",
    )
    .bind(id)
    .bind(host)
    .bind(pid)
    .bind(slots)
    .execute(ex)
    .await?;
    Ok(())
}

/// Refreshes the heartbeat. False when the row is gone: the sweeper
/// declared this worker dead and recovered its work.
pub async fn heartbeat(ex: impl PgExecutor<'_>, id: &str) -> Result<bool> {
    let done = sqlx::query("update worker set heartbeat_at = now() where id = $1")
        .bind(id)
        .execute(ex)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes a worker's row (clean shutdown).
pub async fn deregister(ex: impl PgExecutor<'_>, id: &str) -> Result<()> {
    sqlx::query("delete from worker where id = $1")
        .bind(id)
        .execute(ex)
        .await?;
    Ok(())
}

/// Deletes rows of workers silent for longer than `older_than_ms` that hold
/// no subtask any more; returns their ids.
pub async fn delete_dead(ex: impl PgExecutor<'_>, older_than_ms: i64) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "delete from worker w \
         where w.heartbeat_at < now() - make_interval(secs => $1::float8 / 1000) \
           and not exists (select 1 from subtask_instance s \
               where s.executor = w.id and s.status in ('RUNNING', 'CANCELING')) \
         returning w.id",
    )
    .bind(older_than_ms as f64)
    .fetch_all(ex)
    .await?)
}
