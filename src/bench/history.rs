//! The `history` bench scenario: builds a large finished history in SQL
//! (generate_series, in chunks), then times every filter and sort of the
//! task list through the HTTP API and each of README's history queries,
//! printing p50/p99 and the indexes each query's plan uses.

use super::{emit, round2};
use crate::store::bench_history as history_sql;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::Instant;

/// Index names and scanned tables of a query's plan, from EXPLAIN (FORMAT
/// JSON): what the bench prints beside each timing.
pub async fn plan_summary(pool: &PgPool, sql: &str) -> anyhow::Result<Value> {
    let plan = history_sql::plan(pool, sql).await?;
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
    walk(&plan[0]["Plan"], &mut indexes, &mut seq);
    Ok(json!({"indexes": indexes, "seq_scans": seq}))
}

/// The machine's one-minute load average (Linux), printed beside each
/// timing: on a shared machine it says how far a figure is taskd's own.
pub fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
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
    // A database kept from an earlier run (`--reuse-database`) is timed as
    // it is.
    let reused = history_sql::max_task_id(pool).await? > 0;
    if !reused {
        history_sql::build_history(pool, tasks, 0).await?;
    }
    let sizes = history_sql::history_counts(pool).await?;
    emit(json!({
        "scenario": "history_build", "reused": reused, "tasks": sizes.0, "subtasks": sizes.1,
        "edges": sizes.2, "log_lines": sizes.3, "database_size": sizes.4,
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
            "max_ms": max, "load1": load1(), "returned": body["data"]["contents"].as_array().map_or(0, Vec::len),
            "total_elements": page["totalElements"],
            "estimated": page["totalElementsEstimated"].as_bool().unwrap_or(false),
        }));
    }
    stop.cancel();
    let _ = server.await;

    for (label, sql) in history_sql::HISTORY_QUERIES {
        let mut lat = Vec::with_capacity(samples);
        let mut rows = 0;
        for i in 0..samples + 2 {
            let t = Instant::now();
            rows = history_sql::run_query(pool, sql).await?;
            if i >= 2 {
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let (p50, p99, max) = percentiles(lat);
        emit(json!({
            "scenario": "history_query", "query": label, "p50_ms": p50, "p99_ms": p99,
            "max_ms": max, "load1": load1(), "rows": rows, "plan": plan_summary(pool, sql).await?,
        }));
    }
    Ok(())
}
