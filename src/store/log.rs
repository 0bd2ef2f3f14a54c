//! SQL of the `subtask_log` aggregate: log lines per subtask and run_time.

use super::Result;
use sqlx::PgExecutor;

pub async fn append(
    ex: impl PgExecutor<'_>,
    subtask: i64,
    run_time: i32,
    line: &str,
) -> Result<()> {
    sqlx::query("insert into subtask_log (subtask_id, run_time, line) values ($1, $2, $3)")
        .bind(subtask)
        .bind(run_time)
        .bind(line)
        .execute(ex)
        .await?;
    Ok(())
}

/// The lines of a subtask, every run in order, or just one run's.
pub async fn lines(
    ex: impl PgExecutor<'_>,
    subtask: i64,
    run_time: Option<i32>,
) -> Result<Vec<(i32, String)>> {
    Ok(sqlx::query_as(
        "select run_time, line from subtask_log \
         where subtask_id = $1 and ($2::int is null or run_time = $2) \
         order by run_time, id",
    )
    .bind(subtask)
    .bind(run_time)
    .fetch_all(ex)
    .await?)
}
