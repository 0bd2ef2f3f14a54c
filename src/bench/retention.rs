//! The `prune` and `retention` bench scenarios: flat throughput while a
//! large prune runs against the same database, beside rounds without one;
//! and table sizes sampled under a steady load with a short retention.

use super::{emit, flat_nodes, measured_rate, round2, submit_many, BenchArgs};
use crate::engine::{HistoryConfig, Maintenance};
use crate::store::bench as bench_sql;
use crate::store::bench_history as history_sql;
use serde_json::json;
use sqlx::PgPool;
use std::time::{Duration, Instant};

/// Waits until every task with an id above `since` has settled.
async fn wait_settled(pool: &PgPool, since: i64) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(600);
    while history_sql::running_since(pool, since).await? > 0 {
        if Instant::now() > end {
            anyhow::bail!("tasks still RUNNING after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// One round of the flat load: `tasks` one-subtask tasks submitted while
/// the workers run them; subtasks/s by the database's timestamps.
async fn flat_round(pool: &PgPool, tasks: usize) -> anyhow::Result<f64> {
    let since = bench_sql::max_subtask_id(pool).await?;
    let since_task = history_sql::max_task_id(pool).await?;
    submit_many(pool, tasks, &flat_nodes(), 8).await?;
    wait_settled(pool, since_task).await?;
    Ok(measured_rate(pool, since).await?.1)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Builds `subtasks` subtasks of history finished 100 days ago, runs
/// rounds of the flat load without a prune, then rounds while
/// `taskd prune --older-than 90d` removes that history, and again without.
pub async fn prune_scenario(
    args: &BenchArgs,
    pool: &PgPool,
    url: &str,
    subtasks: i64,
) -> anyhow::Result<()> {
    let t = Instant::now();
    history_sql::build_history(pool, subtasks / history_sql::STEPS, 100).await?;
    emit(json!({
        "scenario": "prune_build", "subtasks": subtasks,
        "seconds": round2(t.elapsed().as_secs_f64()),
    }));
    let workers = super::Workers::start(args, url).await?;
    let rounds = 3;
    let mut before = Vec::new();
    let wal0 = history_sql::wal_bytes(pool).await?;
    for _ in 0..rounds {
        before.push(flat_round(pool, args.tasks).await?);
    }
    let wal1 = history_sql::wal_bytes(pool).await?;
    let m = Maintenance::new(pool.clone(), HistoryConfig::default());
    let started = Instant::now();
    let prune = tokio::spawn(async move { m.prune_now(Duration::from_secs(90 * 86_400)).await });
    let mut during = Vec::new();
    while !prune.is_finished() {
        during.push(flat_round(pool, args.tasks).await?);
    }
    let (_, removed) = prune.await??;
    let prune_s = started.elapsed().as_secs_f64();
    let wal2 = history_sql::wal_bytes(pool).await?;
    // WAL per subtask the flat load ran without a prune; the prune's own
    // share of the WAL written while it ran is the rest.
    let load_wal_per_subtask = (wal1 - wal0) as f64 / (rounds * args.tasks) as f64;
    let prune_wal =
        (wal2 - wal1) as f64 - load_wal_per_subtask * (during.len() * args.tasks) as f64;
    let mut after = Vec::new();
    for _ in 0..rounds {
        after.push(flat_round(pool, args.tasks).await?);
    }
    workers.stop().await;
    let without = mean(&[before.as_slice(), after.as_slice()].concat());
    emit(json!({
        "scenario": "prune", "removed_tasks": removed.tasks, "removed_subtasks": removed.subtasks,
        "removed_edges": removed.edges, "removed_logs": removed.logs,
        "prune_seconds": round2(prune_s),
        "prune_subtasks_per_s": round2(removed.subtasks as f64 / prune_s.max(1e-6)),
        "flat_subtasks_per_s_before": before.iter().copied().map(round2).collect::<Vec<_>>(),
        "flat_subtasks_per_s_during": during.iter().copied().map(round2).collect::<Vec<_>>(),
        "flat_subtasks_per_s_after": after.iter().copied().map(round2).collect::<Vec<_>>(),
        "during_over_without": round2(mean(&during) / without.max(1e-6)),
        "load_wal_bytes_per_subtask": round2(load_wal_per_subtask),
        "prune_wal_mib": round2(prune_wal / 1_048_576.0),
        "prune_wal_bytes_per_subtask": round2(prune_wal / removed.subtasks.max(1) as f64),
    }));
    Ok(())
}

/// Table and index sizes of the history tables, in MiB.
async fn sizes(pool: &PgPool) -> anyhow::Result<serde_json::Value> {
    let rows = history_sql::table_sizes_mib(pool).await?;
    Ok(json!(rows
        .into_iter()
        .map(|(n, s)| (n, json!(round2(s))))
        .collect::<serde_json::Map<_, _>>()))
}

/// Dead row versions and autovacuum passes so far of each history table.
async fn vacuum_stats(pool: &PgPool) -> anyhow::Result<serde_json::Value> {
    let rows = history_sql::table_vacuum_stats(pool).await?;
    Ok(json!(rows
        .into_iter()
        .map(|(n, dead, passes)| (n, json!([dead, passes])))
        .collect::<serde_json::Map<_, _>>()))
}

/// Rounds of the flat load for `seconds`, with a retention of `age` and a
/// maintenance pass every 2 s in this process; sizes after each round.
pub async fn retention_scenario(
    args: &BenchArgs,
    pool: &PgPool,
    url: &str,
    seconds: u64,
    age: Duration,
) -> anyhow::Result<()> {
    let cfg = HistoryConfig {
        retention: Some(age),
        interval: Duration::from_secs(2),
        ..HistoryConfig::default()
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let pass = tokio::spawn(Maintenance::new(pool.clone(), cfg).run(stop.clone()));
    let workers = super::Workers::start(args, url).await?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        let rate = flat_round(pool, args.tasks).await?;
        let tasks = history_sql::task_count(pool).await?;
        emit(json!({
            "scenario": "retention", "at_s": round2(start.elapsed().as_secs_f64()),
            "retention_s": age.as_secs(), "flat_subtasks_per_s": round2(rate),
            "tasks_kept": tasks, "mib": sizes(pool).await?,
            "dead_rows_autovacuums": vacuum_stats(pool).await?,
        }));
    }
    workers.stop().await;
    stop.cancel();
    let _ = pass.await;
    Ok(())
}
