//! The `history` bench scenario: builds a large finished history in SQL
//! (generate_series, in chunks), then times every filter and sort of the
//! task list through the HTTP API and each of README's history queries,
//! printing p50/p99 and the indexes each query's plan uses.

use super::{emit, round2};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::Instant;

/// Subtasks per generated task (a chain: 9 edges), one log line each.
const STEPS: i64 = 10;
/// Tasks generated per statement.
const CHUNK: i64 = 50_000;
/// Days the generated history spans, ending now.
pub const DAYS: i64 = 30;

/// Inserts `tasks` tasks created over the last `DAYS` days (1 in 20
/// FAILED at its last step, 1 in 1000 still RUNNING, the rest SUCCESSFUL),
/// each with `STEPS` subtasks in a chain, their edges and one log line per
/// subtask, queues the settled ones for the rollup like the trigger does,
/// and drains that queue. `ago_days` shifts the whole history into the
/// past (for retention measurements).
pub async fn build(pool: &PgPool, tasks: i64, ago_days: i64) -> anyhow::Result<()> {
    // A superuser may skip the per-row foreign-key checks of rows that are
    // consistent by construction; anyone else builds more slowly.
    let superuser: bool =
        sqlx::query_scalar("select rolsuper from pg_roles where rolname = current_user")
            .fetch_one(pool)
            .await?;
    let mut from = 0;
    while from < tasks {
        let to = (from + CHUNK).min(tasks);
        let mut tx = pool.begin().await?;
        if superuser {
            sqlx::query("set local session_replication_role = replica")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
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
        )
        .bind(from)
        .bind(to)
        .bind(tasks)
        .bind(ago_days as i32)
        .bind(DAYS as f64)
        .bind(STEPS as i32)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        from = to;
    }
    while crate::store::history::rollup(pool, 20_000).await? > 0 {}
    // Index-only scans need the visibility map, and plans need statistics.
    sqlx::query("vacuum analyze").execute(pool).await?;
    Ok(())
}

/// README's history queries (`docs/history.md` shows them with their
/// plans), each with a name; `$1` is a server id.
pub const README_QUERIES: &[(&str, &str)] = &[
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
];

/// Index names and scanned tables of a query's plan, from EXPLAIN (FORMAT
/// JSON): what the bench prints beside each timing.
pub async fn plan_summary(pool: &PgPool, sql: &str) -> anyhow::Result<Value> {
    let plan: sqlx::types::Json<Value> =
        sqlx::query_scalar(&format!("explain (format json) {sql}"))
            .fetch_one(pool)
            .await?;
    let mut indexes = Vec::new();
    let mut seq = Vec::new();
    fn walk(node: &Value, indexes: &mut Vec<String>, seq: &mut Vec<String>) {
        if let Some(i) = node["Index Name"].as_str() {
            if !indexes.iter().any(|x| x == i) {
                indexes.push(i.to_string());
            }
        }
        if node["Node Type"] == "Seq Scan" {
            if let Some(r) = node["Relation Name"].as_str() {
                seq.push(r.to_string());
            }
        }
        for child in node["Plans"].as_array().into_iter().flatten() {
            walk(child, indexes, seq);
        }
    }
    walk(&plan.0[0]["Plan"], &mut indexes, &mut seq);
    Ok(json!({"indexes": indexes, "seq_scans": seq}))
}

fn percentiles(mut lat: Vec<f64>) -> (f64, f64, f64) {
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    (round2(pct(0.5)), round2(pct(0.99)), round2(pct(1.0)))
}

/// The list calls timed: every filter and sort, deep pages and time
/// ranges, as query strings of `GET /api/v2/tasks/instances`.
fn list_calls() -> Vec<(String, String)> {
    let now = chrono::Utc::now();
    let at = |days: i64| {
        (now - chrono::Duration::days(days)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let calls = [
        ("default", String::new()),
        ("status=FAILED", "status=FAILED".into()),
        ("status=RUNNING", "status=RUNNING".into()),
        ("status=FAILED,RUNNING", "status=FAILED,RUNNING".into()),
        ("name=Stop", "name=Stop".into()),
        ("name=host agent", "name=host%20agent".into()),
        ("name=no such name", "name=no%20such%20name".into()),
        ("type=SCHEDULED", "type=SCHEDULED".into()),
        ("clusterId=3", "clusterId=3".into()),
        ("hostId=7", "hostId=7".into()),
        ("serverId=42", "serverId=42".into()),
        ("creator=user3", "creator=user3".into()),
        ("sort=createTime,desc", "sort=createTime,desc".into()),
        ("sort=startTime,asc", "sort=startTime,asc".into()),
        ("sort=finishTime,desc", "sort=finishTime,desc".into()),
        ("sort=name,asc", "sort=name,asc".into()),
        ("sort=status,desc", "sort=status,desc".into()),
        ("sort=id,desc&page=50000", "sort=id,desc&page=50000".into()),
        (
            "sort=createTime,desc&page=50000",
            "sort=createTime,desc&page=50000".into(),
        ),
        ("status=FAILED&page=2000", "status=FAILED&page=2000".into()),
        (
            "createTimeFrom=1 day ago",
            format!("createTimeFrom={}", at(1)),
        ),
        (
            "createTime 20..19 days ago",
            format!("createTimeFrom={}&createTimeTo={}", at(20), at(19)),
        ),
        (
            "finishTime 7..6 days ago",
            format!("finishTimeFrom={}&finishTimeTo={}", at(7), at(6)),
        ),
        (
            "creator=user7&status=FAILED&sort=createTime,desc",
            "creator=user7&status=FAILED&sort=createTime,desc".into(),
        ),
        // No task matches both (the generator gives user3 no failures): the
        // partial index on FAILED rows is read whole.
        (
            "creator=user3&status=FAILED&sort=createTime,desc",
            "creator=user3&status=FAILED&sort=createTime,desc".into(),
        ),
    ];
    calls.into_iter().map(|(l, q)| (l.to_string(), q)).collect()
}

/// Builds `tasks` tasks of history, then times each list call and README
/// query `samples` times (after two warm-up calls).
pub async fn scenario(pool: &PgPool, tasks: i64, samples: usize) -> anyhow::Result<()> {
    let t = Instant::now();
    build(pool, tasks, 0).await?;
    let sizes: (i64, i64, i64, i64, String) = sqlx::query_as(
        "select (select count(*) from task_instance), (select count(*) from subtask_instance), \
             (select count(*) from subtask_edge), (select count(*) from subtask_log), \
             pg_size_pretty(pg_database_size(current_database()))",
    )
    .fetch_one(pool)
    .await?;
    emit(json!({
        "scenario": "history_build", "tasks": sizes.0, "subtasks": sizes.1, "edges": sizes.2,
        "log_lines": sizes.3, "database_size": sizes.4,
        "seconds": round2(t.elapsed().as_secs_f64()),
    }));

    let password = crate::auth::generate_password();
    crate::auth::ensure_admin(pool, "bench", &password).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state = crate::http::AppState::new(pool.clone(), addr.to_string());
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(crate::http::serve(listener, state, stop.clone()));
    let client = reqwest::Client::new();
    for (label, query) in list_calls() {
        let url = format!("http://{addr}/api/v2/tasks/instances?{query}");
        let mut lat = Vec::with_capacity(samples);
        let mut body = Value::Null;
        for i in 0..samples + 2 {
            let t = Instant::now();
            let resp = client
                .get(&url)
                .basic_auth("bench", Some(&password))
                .send()
                .await?;
            let status = resp.status();
            body = resp.json().await?;
            if !status.is_success() {
                anyhow::bail!("{url}: {status} {body}");
            }
            if i >= 2 {
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let (p50, p99, max) = percentiles(lat);
        let page = &body["data"]["page"];
        emit(json!({
            "scenario": "history_list", "call": label, "p50_ms": p50, "p99_ms": p99,
            "max_ms": max, "returned": body["data"]["contents"].as_array().map_or(0, Vec::len),
            "total_elements": page["totalElements"],
            "estimated": page["totalElementsEstimated"].as_bool().unwrap_or(false),
        }));
    }
    stop.cancel();
    let _ = server.await;

    for (label, sql) in README_QUERIES {
        let mut lat = Vec::with_capacity(samples);
        let mut rows = 0;
        for i in 0..samples + 2 {
            let t = Instant::now();
            rows = sqlx::query(sql).fetch_all(pool).await?.len();
            if i >= 2 {
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let (p50, p99, max) = percentiles(lat);
        emit(json!({
            "scenario": "history_query", "query": label, "p50_ms": p50, "p99_ms": p99,
            "max_ms": max, "rows": rows, "plan": plan_summary(pool, sql).await?,
        }));
    }
    Ok(())
}
