//! SQL of task history: the daily rollups drained from the queue that each
//! task's settling fills, retention (removing whole finished tasks by age),
//! and the advisory lock that lets one process at a time do either.

use super::Result;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

/// Advisory lock key of the history maintenance pass ("taskdh" in ASCII).
pub const MAINTENANCE_LOCK: i64 = 0x7461_736b_6468;

/// Takes the maintenance lock for this session if nobody holds it.
pub async fn try_lock(conn: &mut PgConnection) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"select pg_try_advisory_lock($1) as "locked!""#,
        MAINTENANCE_LOCK,
    )
    .fetch_one(conn)
    .await?)
}

/// Takes the maintenance lock for this session, waiting for its holder.
pub async fn lock(conn: &mut PgConnection) -> Result<()> {
    sqlx::query!("select pg_advisory_lock($1)", MAINTENANCE_LOCK,)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn unlock(conn: &mut PgConnection) -> Result<()> {
    sqlx::query_scalar!("select pg_advisory_unlock($1)", MAINTENANCE_LOCK)
        .fetch_one(conn)
        .await?;
    Ok(())
}

/// Counts up to `limit` queued settlings into the daily rollups (tasks,
/// steps, failure reasons) and removes them from the queue, in one
/// statement; returns how many it took. A step is counted with the run it
/// last finished between the task's previous settling and this one.
pub async fn rollup(ex: impl PgExecutor<'_>, limit: i64) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        "with q as materialized ( \
             delete from history_rollup_queue where id in ( \
                 select id from history_rollup_queue order by id limit $1 for update skip locked) \
             returning task_id, status, since, settled_at \
         ), s as materialized ( \
             select (s.finish_time at time zone 'UTC')::date as day, s.name, s.class_name, \
                 s.status = 'FAILED' as failed, s.error, s.task_id, \
                 coalesce(extract(epoch from s.finish_time - s.start_time) * 1000, 0)::float8 \
                     as ms \
             from q join subtask_instance s on s.task_id = q.task_id \
             where s.status in ('SUCCESSFUL', 'FAILED') \
               and s.operation in ('EXECUTE', 'RETRY', 'CANCEL') \
               and s.finish_time <= q.settled_at \
               and (q.since is null or s.finish_time > q.since) \
         ), sb as ( \
             select day, name, class_name, taskd_hist_bucket(ms) as b, count(*) as n, \
                 count(*) filter (where failed) as f, sum(ms) as total, max(ms) as mx \
             from s group by 1, 2, 3, 4 \
         ), sd as ( \
             insert into history_step_daily as h \
                 (day, name, class_name, runs, failed, total_ms, max_ms, hist) \
             select day, name, class_name, sum(n), sum(f), sum(total), max(mx), \
                 taskd_hist_of(array_agg(b), array_agg(n)) \
             from sb group by 1, 2, 3 \
             on conflict (day, name, class_name) do update set \
                 runs = h.runs + excluded.runs, failed = h.failed + excluded.failed, \
                 total_ms = h.total_ms + excluded.total_ms, \
                 max_ms = greatest(h.max_ms, excluded.max_ms), \
                 hist = taskd_hist_add(h.hist, excluded.hist) \
         ), fd as ( \
             insert into history_failure_daily as h (day, name, error, failures, last_task_id) \
             select day, name, left(coalesce(error, ''), 500), count(*), max(task_id) \
             from s where failed group by 1, 2, 3 \
             on conflict (day, name, error) do update set \
                 failures = h.failures + excluded.failures, \
                 last_task_id = greatest(h.last_task_id, excluded.last_task_id) \
         ), t as ( \
             select (q.settled_at at time zone 'UTC')::date as day, t.name, q.status, \
                 greatest(extract(epoch from q.settled_at - t.start_time) * 1000, 0)::float8 \
                     as ms \
             from q join task_instance t on t.id = q.task_id \
         ), tb as ( \
             select day, name, status, taskd_hist_bucket(ms) as b, count(*) as n, \
                 sum(ms) as total, max(ms) as mx \
             from t group by 1, 2, 3, 4 \
         ), td as ( \
             insert into history_task_daily as h \
                 (day, name, status, settled, total_ms, max_ms, hist) \
             select day, name, status, sum(n), sum(total), max(mx), \
                 taskd_hist_of(array_agg(b), array_agg(n)) \
             from tb group by 1, 2, 3 \
             on conflict (day, name, status) do update set \
                 settled = h.settled + excluded.settled, \
                 total_ms = h.total_ms + excluded.total_ms, \
                 max_ms = greatest(h.max_ms, excluded.max_ms), \
                 hist = taskd_hist_add(h.hist, excluded.hist) \
         ) \
         select count(*) as \"n!\" from q",
        limit,
    )
    .fetch_one(ex)
    .await?)
}

/// What a prune removed, or would remove.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    pub tasks: i64,
    pub subtasks: i64,
    pub edges: i64,
    pub logs: i64,
}

impl std::ops::AddAssign for Removed {
    fn add_assign(&mut self, o: Removed) {
        self.tasks += o.tasks;
        self.subtasks += o.subtasks;
        self.edges += o.edges;
        self.logs += o.logs;
    }
}

/// The database's `now()` less `age_s` seconds: the cutoff of a prune.
pub async fn cutoff(ex: impl PgExecutor<'_>, age_s: f64) -> Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar!(
        r#"select now() - make_interval(secs => $1) as "cutoff!""#,
        age_s,
    )
    .fetch_one(ex)
    .await?)
}

/// Removes up to `limit` whole tasks that finished before `cutoff`, with
/// all their subtasks, edges and log lines, in one statement (so one
/// transaction: a task goes entirely or not at all). Only settled tasks
/// already counted in the rollups qualify; each task row is locked (SKIP
/// LOCKED) and its status checked again under the lock, so a task that a
/// retry or rollback has just made RUNNING, or is making RUNNING, stays.
pub async fn prune_batch(
    ex: impl PgExecutor<'_>,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<Removed> {
    Ok(sqlx::query_as!(
        Removed,
        "with t as materialized ( \
             select t.id from task_instance t \
             where t.status <> 'RUNNING' and t.finish_time < $1 \
               and not exists (select 1 from history_rollup_queue q where q.task_id = t.id) \
             order by t.finish_time, t.id limit $2 \
             for update of t skip locked \
         ), s as materialized ( \
             select s.id from t cross join lateral ( \
                 select s.id from subtask_instance s where s.task_id = t.id offset 0) s \
         ), l as ( \
             delete from subtask_log where subtask_id in (select id from s) returning 1 \
         ), e as ( \
             delete from subtask_edge where downstream_id in (select id from s) returning 1 \
         ), ds as ( \
             delete from subtask_instance where id in (select id from s) returning 1 \
         ), dt as ( \
             delete from task_instance where id in (select id from t) returning 1 \
         ) \
         select (select count(*) from dt) as \"tasks!\", \
             (select count(*) from ds) as \"subtasks!\", \
             (select count(*) from e) as \"edges!\", (select count(*) from l) as \"logs!\"",
        cutoff,
        limit,
    )
    .fetch_one(ex)
    .await?)
}

/// What pruning at `cutoff` would remove now, changing nothing.
pub async fn prune_preview(ex: impl PgExecutor<'_>, cutoff: DateTime<Utc>) -> Result<Removed> {
    Ok(sqlx::query_as!(
        Removed,
        "with t as materialized ( \
             select id from task_instance where status <> 'RUNNING' and finish_time < $1 \
         ), s as materialized ( \
             select s.id from t join subtask_instance s on s.task_id = t.id \
         ) \
         select (select count(*) from t) as \"tasks!\", \
             (select count(*) from s) as \"subtasks!\", \
             (select count(*) from subtask_edge where downstream_id in (select id from s)) \
                 as \"edges!\", \
             (select count(*) from subtask_log where subtask_id in (select id from s)) \
                 as \"logs!\"",
        cutoff,
    )
    .fetch_one(ex)
    .await?)
}

/// Settlings waiting to be counted in the rollups.
pub async fn queued(ex: impl PgExecutor<'_>) -> Result<i64> {
    Ok(
        sqlx::query_scalar!(r#"select count(*) as "n!" from history_rollup_queue"#,)
            .fetch_one(ex)
            .await?,
    )
}
