//! SQL of the `subtask_log` aggregate: log lines per subtask and run_time.

use super::Result;
use sqlx::PgExecutor;

pub async fn append(
    ex: impl PgExecutor<'_>,
    subtask: i64,
    run_time: i32,
    line: &str,
) -> Result<()> {
    sqlx::query!(
        "insert into subtask_log (subtask_id, run_time, line) values ($1, $2, $3)",
        subtask,
        run_time,
        line,
    )
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
    let rows = sqlx::query!(
        "select run_time, line from subtask_log
         where subtask_id = $1 and ($2::int is null or run_time = $2)
         order by run_time, id",
        subtask,
        run_time,
    )
    .fetch_all(ex)
    .await?;
    Ok(rows.into_iter().map(|r| (r.run_time, r.line)).collect())
}

/// One run of a subtask as its log shows it: when its first and last lines
/// were written, how many there are, and its opening (separator) line.
#[derive(Debug, Clone)]
pub struct RunSpan {
    pub subtask_id: i64,
    pub run_time: i32,
    pub first_time: chrono::DateTime<chrono::Utc>,
    pub last_time: chrono::DateTime<chrono::Utc>,
    pub lines: i64,
    pub opening: String,
}

/// The runs of the given subtasks, by subtask and run_time.
pub async fn runs(ex: impl PgExecutor<'_>, subtasks: &[i64]) -> Result<Vec<RunSpan>> {
    Ok(sqlx::query_as!(
        RunSpan,
        r#"select l.subtask_id, l.run_time, min(l.log_time) as "first_time!",
                max(l.log_time) as "last_time!", count(*) as "lines!",
                (array_agg(l.line order by l.id))[1] as "opening!"
           from subtask_log l where l.subtask_id = any($1)
           group by l.subtask_id, l.run_time order by l.subtask_id, l.run_time"#,
        subtasks,
    )
    .fetch_all(ex)
    .await?)
}
