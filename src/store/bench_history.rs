//! SQL of the bench's history scenarios: a large finished history built
//! with generate_series, the README history queries it times, and the
//! sizes and plans it reports.

use super::Result;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgPool;

/// Subtasks per generated task (a chain: 9 edges), one log line each.
pub const STEPS: i64 = 10;
/// Tasks generated per statement.
const CHUNK: i64 = 50_000;
/// Days the generated history spans, ending `ago_days` ago.
pub const DAYS: i64 = 30;

/// Inserts `tasks` tasks created over `DAYS` days ending `ago_days` ago (1
/// in 20 FAILED at its last step, 1 in 1000 still RUNNING, the rest
/// SUCCESSFUL), each with `STEPS` subtasks in a chain, their edges and one
/// log line per subtask; queues the settled ones for the rollup as the
/// trigger does and drains that queue; then vacuums and analyzes.
pub async fn build_history(pool: &PgPool, tasks: i64, ago_days: i64) -> Result<()> {
    // A superuser may skip the per-row foreign-key checks of rows that are
    // consistent by construction; anyone else builds more slowly.
    let superuser: bool = sqlx::query_scalar!(
        r#"select rolsuper as "rolsuper!" from pg_roles where rolname = current_user"#,
    )
    .fetch_one(pool)
    .await?;
    let mut from = 0;
    while from < tasks {
        let to = (from + CHUNK).min(tasks);
        let mut tx = pool.begin().await?;
        if superuser {
            sqlx::query!("set local session_replication_role = replica",)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query!(
            "with g as ( \
                 select g, (array['Restart OB server', 'Start OB server', 'Stop OB server', \
                     'Restart host agent'])[1 + g % 4] as name, \
                     case when g % 1000 = 999 then 'RUNNING' when g % 20 = 7 then 'FAILED' \
                          else 'SUCCESSFUL' end as status, \
                     now() - make_interval(days => $4::int) \
                         - make_interval(secs => ($3::bigint - g) * (86400.0 * $5) / $3) \
                         as ct \
                 from generate_series($1::bigint, $2::bigint - 1) g \
             ), t as ( \
                 insert into task_instance (name, type, status, operation, creator, cluster_id, \
                     host_id, server_id, context, trace_id, create_time, start_time, \
                     finish_time, last_settled_at) \
                 select name, case g % 100 when 17 then 'SCHEDULED' when 71 then 'SYS_SCHEDULED' \
                         else 'MANUAL' end, \
                     status, 'EXECUTE', 'user' || (g % 20), \
                     case when g % 4 <> 3 then 1 + g % 10 end, \
                     case when g % 4 = 3 then 1 + g % 100 end, \
                     case when g % 4 <> 3 then 1 + g % 100 end, \
                     '{}'::jsonb, 'history-' || g, ct, ct, \
                     case when status <> 'RUNNING' then ct + interval '12 seconds' end, \
                     case when status <> 'RUNNING' then ct + interval '12 seconds' end \
                 from g order by g \
                 returning id, status, start_time, finish_time \
             ), q as ( \
                 insert into history_rollup_queue (task_id, status, since, settled_at) \
                 select id, status, null, finish_time from t where status <> 'RUNNING' \
             ), s as ( \
                 insert into subtask_instance (task_id, series_id, name, description, \
                     class_name, status, operation, timeout_s, pending_upstreams, context, \
                     start_time, finish_time, run_after, error) \
                 select t.id, k, 'Step ' || k, 'history step', 'bench.step' || k, \
                     case when t.status = 'RUNNING' then 'PENDING' \
                          when t.status = 'FAILED' and k = $6 - 1 then 'FAILED' \
                          else 'SUCCESSFUL' end, \
                     'EXECUTE', 60, case when k = 0 or t.status <> 'RUNNING' then 0 else 1 end, \
                     case when t.status <> 'RUNNING' then '{}'::jsonb end, \
                     case when t.status <> 'RUNNING' \
                         then t.start_time + make_interval(secs => k * 1.2) end, \
                     case when t.status <> 'RUNNING' then t.start_time \
                         + make_interval(secs => k * 1.2 + 0.05 + ((t.id * 7 + k * 13) % 950) / 1000.0) end, \
                     case when t.status <> 'RUNNING' \
                         then t.start_time + make_interval(secs => k * 1.2) end, \
                     case when t.status = 'FAILED' and k = $6 - 1 then \
                         (array['agent on host-' || (t.id % 100) || ' unreachable: connection refused', \
                                'observer did not stop within 60 s', \
                                'subtask timed out'])[1 + t.id % 3] end \
                 from t, generate_series(0, $6::int - 1) k \
                 order by t.id, k \
                 returning id, task_id, series_id, start_time \
             ), e as ( \
                 insert into subtask_edge (upstream_id, downstream_id) \
                 select a.id, b.id from s a \
                 join s b on b.task_id = a.task_id and b.series_id = a.series_id + 1 \
             ) \
             insert into subtask_log (subtask_id, run_time, log_time, line) \
             select id, 1, coalesce(start_time, now()), \
                 '==================== EXECUTE run 1 of Step ' || series_id \
                 || ' on history ====================' \
             from s order by id",
            from,
            to,
            tasks,
            ago_days as i32,
            DAYS as f64,
            STEPS as i32,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        from = to;
    }
    while super::history::rollup(pool, 20_000).await? > 0 {}
    // Index-only scans need the visibility map, and plans need statistics.
    sqlx::query!("vacuum analyze",).execute(pool).await?;
    Ok(())
}

pub const HISTORY_QUERIES: &[(&str, &str)] = &[
    (
        "failed_tasks_last_day",
        "select t.id, t.name, t.creator, s.name as step, s.run_time, s.error, s.finish_time \
         from task_instance t join subtask_instance s on s.task_id = t.id \
         where t.status = 'FAILED' and s.status = 'FAILED' \
           and t.create_time > now() - interval '1 day' \
         order by t.id desc",
    ),
    (
        "step_durations_30_days",
        "select name, sum(runs) as runs, sum(failed) as failed, \
             round(sum(total_ms)::numeric / sum(runs), 1) as mean_ms, \
             taskd_hist_quantile(taskd_hist_sum(hist), 0.5) as p50_ms, \
             taskd_hist_quantile(taskd_hist_sum(hist), 0.95) as p95_ms, max(max_ms) as max_ms \
         from history_step_daily where day > current_date - 30 \
         group by name order by mean_ms desc",
    ),
    (
        "step_stats_by_day_7_days",
        "select day, name, runs, failure_rate, p50_ms, p95_ms from step_stats_daily \
         where day > current_date - 7 order by day, name",
    ),
    (
        "failure_reasons_7_days",
        "select name, error, sum(failures) as failures from history_failure_daily \
         where day > current_date - 7 group by name, error order by failures desc limit 20",
    ),
    (
        "tasks_per_day_by_status_7_days",
        "select day, status, sum(settled) as tasks, round(sum(total_ms)::numeric / sum(settled)) \
             as mean_ms \
         from history_task_daily where day > current_date - 7 \
         group by day, status order by day, status",
    ),
    (
        "slowest_tasks_last_day",
        "select id, name, status, duration from task_duration \
         where finish_time > now() - interval '1 day' order by duration desc limit 20",
    ),
    (
        "everything_done_to_one_server",
        "select id, name, status, operation, creator, create_time, finish_time \
         from task_instance where server_id = 3 order by id desc limit 100",
    ),
    (
        "log_of_one_step",
        "select run_time, log_time, line from subtask_log \
         where subtask_id = (select min(id) from subtask_instance) order by run_time, id",
    ),
    (
        "queue_depth",
        "select count(*) from subtask_instance where status = 'READY'",
    ),
    (
        "live_workers",
        "select id, host, pid, now() - heartbeat_at as silent_for from worker",
    ),
];

/// Rows of tasks, subtasks, edges and log lines, and the database's size.
pub async fn history_counts(pool: &PgPool) -> Result<(i64, i64, i64, i64, String)> {
    let r = sqlx::query!(
        r#"select (select count(*) from task_instance) as "tasks!",
               (select count(*) from subtask_instance) as "subtasks!",
               (select count(*) from subtask_edge) as "edges!",
               (select count(*) from subtask_log) as "logs!",
               pg_size_pretty(pg_database_size(current_database())) as "size!""#,
    )
    .fetch_one(pool)
    .await?;
    Ok((r.tasks, r.subtasks, r.edges, r.logs, r.size))
}

/// Runs one of `HISTORY_QUERIES`; how many rows it returned.
pub async fn run_query(pool: &PgPool, sql: &str) -> Result<usize> {
    Ok(sqlx::query(sql).fetch_all(pool).await?.len())
}

/// The plan of one of `HISTORY_QUERIES` (EXPLAIN, FORMAT JSON).
pub async fn plan(pool: &PgPool, sql: &str) -> Result<serde_json::Value> {
    let plan: Json<serde_json::Value> = sqlx::query_scalar(&format!("explain (format json) {sql}"))
        .fetch_one(pool)
        .await?;
    Ok(plan.0)
}

/// The largest task id so far (0 when there is none).
pub async fn max_task_id(pool: &PgPool) -> Result<i64> {
    Ok(
        sqlx::query_scalar!(r#"select coalesce(max(id), 0) as "id!" from task_instance"#,)
            .fetch_one(pool)
            .await?,
    )
}

/// Tasks above `since` still RUNNING.
pub async fn running_since(pool: &PgPool, since: i64) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"select count(*) as "n!" from task_instance where id > $1 and status = 'RUNNING'"#,
        since,
    )
    .fetch_one(pool)
    .await?)
}

/// Tasks kept.
pub async fn task_count(pool: &PgPool) -> Result<i64> {
    Ok(
        sqlx::query_scalar!(r#"select count(*) as "n!" from task_instance"#,)
            .fetch_one(pool)
            .await?,
    )
}

/// Size with indexes of each history table, in MiB.
pub async fn table_sizes_mib(pool: &PgPool) -> Result<Vec<(String, f64)>> {
    let rows = sqlx::query!(
        r#"select relname::text as "name!",
               (pg_total_relation_size(oid) / 1048576.0)::float8 as "mib!"
           from pg_class
           where relname in ('task_instance', 'subtask_instance', 'subtask_edge', 'subtask_log')
           order by relname"#,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.name, r.mib)).collect())
}

/// Dead row versions and autovacuum passes of each history table, from
/// the statistics collector: whether the space deletes free is reclaimed.
pub async fn table_vacuum_stats(pool: &PgPool) -> Result<Vec<(String, i64, i64)>> {
    Ok(sqlx::query_as(
        "select relname::text, n_dead_tup, autovacuum_count from pg_stat_user_tables \
         where relname in ('task_instance', 'subtask_instance', 'subtask_edge', 'subtask_log') \
         order by relname",
    )
    .fetch_all(pool)
    .await?)
}

/// Bytes of WAL written by the whole server so far (the current insert
/// position): differences between two readings give the WAL a phase wrote.
pub async fn wal_bytes(pool: &PgPool) -> Result<i64> {
    Ok(
        sqlx::query_scalar("select pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
            .fetch_one(pool)
            .await?,
    )
}

/// Now, less `days` days, by the database's clock.
pub async fn days_ago(pool: &PgPool, days: i64) -> Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar!(
        r#"select now() - make_interval(days => $1) as "t!""#,
        days as i32,
    )
    .fetch_one(pool)
    .await?)
}
