//! SQL of `taskd bench`: its scratch databases and the figures it reads
//! back from the database's own timestamps and counters.

use super::Result;
use crate::model::TaskId;
use sqlx::PgPool;

/// Tasks still RUNNING.
pub async fn running_tasks(pool: &PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"select count(*) as "n!" from task_instance where status = 'RUNNING'"#,
    )
    .fetch_one(pool)
    .await?)
}

/// SUCCESSFUL subtasks after `since_id` and the seconds from their first
/// start to their last finish.
pub async fn succeeded_since(pool: &PgPool, since_id: i64) -> Result<(i64, Option<f64>)> {
    let r = sqlx::query!(
        r#"select count(*) as "n!",
               extract(epoch from max(finish_time) - min(start_time))::float8 as secs
           from subtask_instance where id > $1 and status = 'SUCCESSFUL'"#,
        since_id,
    )
    .fetch_one(pool)
    .await?;
    Ok((r.n, r.secs))
}

/// Transactions committed in this database so far (PostgreSQL's counter).
pub async fn commits(pool: &PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"select xact_commit as "n!" from pg_stat_database where datname = current_database()"#,
    )
    .fetch_one(pool)
    .await?)
}

/// The newest subtask's id (0 when there is none).
pub async fn max_subtask_id(pool: &PgPool) -> Result<i64> {
    Ok(
        sqlx::query_scalar!(r#"select coalesce(max(id), 0) as "id!" from subtask_instance"#,)
            .fetch_one(pool)
            .await?,
    )
}

/// p50 and p99 of the READY -> RUNNING wait, in ms, over the first runs of
/// root subtasks after `since_id`.
pub async fn root_handoff_ms(pool: &PgPool, since_id: i64) -> Result<(Option<f64>, Option<f64>)> {
    let r = sqlx::query!(
        "select percentile_cont(0.5) within group (order by d) as p50, \
                percentile_cont(0.99) within group (order by d) as p99 \
         from (select (extract(epoch from s.start_time - s.run_after) * 1000)::float8 as d \
               from subtask_instance s \
               where s.id > $1 and s.run_time = 1 and s.start_time is not null \
                 and s.run_after is not null \
                 and not exists (select 1 from subtask_edge e where e.downstream_id = s.id)) x",
        since_id,
    )
    .fetch_one(pool)
    .await?;
    Ok((r.p50, r.p99))
}

/// p50 and p99 of the gap from the last upstream's finish to a downstream
/// subtask's start, in ms, after `since_id`.
pub async fn step_gap_ms(pool: &PgPool, since_id: i64) -> Result<(Option<f64>, Option<f64>)> {
    let r = sqlx::query!(
        "select percentile_cont(0.5) within group (order by d) as p50, \
                percentile_cont(0.99) within group (order by d) as p99 \
         from (select (extract(epoch from s.start_time - max(u.finish_time)) * 1000)::float8 as d \
               from subtask_instance s \
               join subtask_edge e on e.downstream_id = s.id \
               join subtask_instance u on u.id = e.upstream_id \
               where s.id > $1 and s.run_time = 1 and s.start_time is not null \
               group by s.id, s.start_time) x",
        since_id,
    )
    .fetch_one(pool)
    .await?;
    Ok((r.p50, r.p99))
}

/// A task's status column, as stored.
pub async fn task_status(pool: &PgPool, id: TaskId) -> Result<String> {
    Ok(
        sqlx::query_scalar!("select status from task_instance where id = $1", id.0,)
            .fetch_one(pool)
            .await?,
    )
}

/// Deletes a task with its subtasks, edges and logs.
pub async fn delete_task(pool: &PgPool, id: TaskId) -> Result<()> {
    sqlx::query("delete from task_instance where id = $1")
        .bind(id.0)
        .execute(pool)
        .await?;
    Ok(())
}

/// Inserts finished history: `k` subtasks, one SUCCESSFUL task per 10,
/// each a chain.
pub async fn insert_history(pool: &PgPool, k: i64) -> Result<()> {
    sqlx::query!(
        "with t as ( \
                 insert into task_instance (name, status, operation, creator, context, trace_id, \
                     finish_time) \
                 select 'history', 'SUCCESSFUL', 'EXECUTE', 'bench', '{}'::jsonb, 'history', now() \
                 from generate_series(1, ($1::bigint + 9) / 10) \
                 returning id \
             ), n as (select id, row_number() over () as r from t), \
             s as ( \
                 insert into subtask_instance (task_id, series_id, name, description, \
                     class_name, status, operation, timeout_s, pending_upstreams, context, \
                     start_time, finish_time, run_after) \
                 select n.id, s, 'history', 'history', 'test.noop', 'SUCCESSFUL', 'EXECUTE', \
                     60, 0, '{}'::jsonb, now(), now(), now() \
                 from n, generate_series(0, 9) s \
                 where (n.r - 1) * 10 + s < $1 \
                 returning id, task_id, series_id \
             ) \
             insert into subtask_edge (upstream_id, downstream_id) \
             select a.id, b.id from s a \
             join s b on b.task_id = a.task_id and b.series_id = a.series_id + 1",
        k,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Refreshes the planner's statistics.
pub async fn analyze(pool: &PgPool) -> Result<()> {
    sqlx::query!("analyze",).execute(pool).await?;
    Ok(())
}

/// Drops database `name` if it exists (forcing its sessions out when
/// `force`). `name` is the bench's own, built from its pid.
pub async fn drop_database(admin: &PgPool, name: &str, force: bool) -> Result<()> {
    let with = if force { " with (force)" } else { "" };
    sqlx::query(&format!("drop database if exists {name}{with}"))
        .execute(admin)
        .await?;
    Ok(())
}

/// Creates database `name` afresh.
pub async fn recreate_database(admin: &PgPool, name: &str) -> Result<()> {
    drop_database(admin, name, false).await?;
    sqlx::query(&format!("create database {name}"))
        .execute(admin)
        .await?;
    Ok(())
}
