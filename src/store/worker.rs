//! SQL of the `worker` aggregate: one liveness row per worker process.

use super::Result;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

/// Inserts (or revives) this worker's row with a fresh heartbeat.
pub async fn register(
    ex: impl PgExecutor<'_>,
    id: &str,
    host: &str,
    pid: i32,
    slots: i32,
) -> Result<()> {
    sqlx::query!(
        "insert into worker (id, host, pid, slots) values ($1, $2, $3, $4)
         on conflict (id) do update set heartbeat_at = now()",
        id,
        host,
        pid,
        slots,
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// Refreshes the heartbeat. False when the row is gone: the sweeper
/// declared this worker dead and recovered its work.
pub async fn heartbeat(ex: impl PgExecutor<'_>, id: &str) -> Result<bool> {
    let done = sqlx::query!("update worker set heartbeat_at = now() where id = $1", id)
        .execute(ex)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks this worker idle (it has free slots and found nothing to claim:
/// commits that make subtasks READY notify while it is) or busy again.
/// Marking idle waits for the commits notifying at that moment (see
/// migration V12), so the claim after it sees their rows.
pub async fn mark_idle(ex: impl PgExecutor<'_>, id: &str, idle: bool) -> Result<()> {
    sqlx::query("select taskd_mark_idle($1, $2)")
        .bind(id)
        .bind(idle)
        .execute(ex)
        .await?;
    Ok(())
}

/// Removes a worker's row (clean shutdown).
pub async fn deregister(ex: impl PgExecutor<'_>, id: &str) -> Result<()> {
    sqlx::query!("delete from worker where id = $1", id)
        .execute(ex)
        .await?;
    Ok(())
}

/// Every worker row's last heartbeat, as PostgreSQL stamped it.
pub async fn heartbeats(ex: impl PgExecutor<'_>) -> Result<Vec<(String, DateTime<Utc>)>> {
    let rows = sqlx::query!("select id, heartbeat_at from worker order by id")
        .fetch_all(ex)
        .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.heartbeat_at)).collect())
}

/// Deletes a worker's row only if its heartbeat is still `seen`: the
/// sweeper's verdict, fenced on what it watched. Locks the row until the
/// caller commits, so the worker's next heartbeat waits and then finds its
/// row gone (it learns it lost its runs). False: it heartbeated since, or
/// another sweeper removed it first.
pub async fn remove_if_silent(
    conn: &mut PgConnection,
    id: &str,
    seen: DateTime<Utc>,
) -> Result<bool> {
    let done = sqlx::query!(
        "delete from worker where id = $1 and heartbeat_at = $2",
        id,
        seen
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
