//! The `wide` and `big` bench scenarios: how the engine's cost depends on
//! a task's size. `wide` runs one task (a root, a split into parallel
//! copies, a join) with the worker processes and prints its per-subtask
//! rate beside the 11-step chains' of the `dag` scenario; `big` times
//! single finishes of a 50,000-node task in this process and compares them
//! with finishes of 11-node restart tasks.

use super::{
    bench_task, dag_nodes, emit, measured_rate, round2, wait_all_done, BenchArgs, Workers,
};
use crate::dag::{DagSpec, NodeSpec};
use crate::engine::{self, EngineConfig, Finished, Outcome};
use crate::model::Context;
use crate::store::bench as bench_sql;
use crate::store::subtask::{self as subtask_sql, RunKey};
use crate::store::task::NewTask;
use serde_json::json;
use sqlx::PgPool;
use std::time::{Duration, Instant};

/// One root, `copies` parallel copies of one node, one join: `copies + 2`
/// no-op nodes.
fn split_task(i: usize, copies: usize, max_concurrency: i32) -> (NewTask, DagSpec) {
    let mut task = bench_task(i);
    task.max_concurrency = max_concurrency;
    task.context
        .list_map
        .insert("ids".into(), (0..copies).map(|c| c.to_string()).collect());
    let nodes = vec![
        NodeSpec::new("root", "test.noop", 60),
        NodeSpec::new("copy", "test.noop", 60)
            .after(&["root"])
            .split_on("ids"),
        NodeSpec::new("join", "test.noop", 60).after(&["copy"]),
    ];
    let spec = DagSpec {
        nodes,
        context: task.context.clone(),
    };
    (task, spec)
}

/// The `wide` scenario: one task of `copies` parallel copies, its
/// concurrency limit twice the slots of all worker processes (so the slots,
/// not the limit, bound it), run by the worker processes.
pub async fn wide(
    args: &BenchArgs,
    pool: &PgPool,
    url: &str,
    copies: usize,
    dag_rate: Option<f64>,
) -> anyhow::Result<()> {
    let since = bench_sql::max_subtask_id(pool).await?;
    let limit = (2 * args.processes * args.slots).max(1) as i32;
    let (task, spec) = split_task(0, copies, limit);
    let t = Instant::now();
    engine::submit(pool, &task, &spec).await?;
    let submit_ms = t.elapsed().as_secs_f64() * 1000.0;
    let workers = Workers::start(args, url).await?;
    wait_all_done(pool, Duration::from_secs(1200)).await?;
    workers.stop().await;
    let (n, rate) = measured_rate(pool, since).await?;
    emit(json!({
        "scenario": "wide", "copies": copies, "max_concurrency": limit, "subtasks": n,
        "submit_ms": round2(submit_ms), "subtasks_per_s": round2(rate),
        "over_dag_subtasks_per_s": dag_rate.map(|d| round2(rate / d)),
    }));
    Ok(())
}

/// Claims one READY subtask and finishes it as succeeded, in one batch of
/// one; returns the milliseconds of the finish alone (None: nothing READY).
async fn timed_finish(pool: &PgPool, cfg: &EngineConfig) -> anyhow::Result<Option<f64>> {
    let Some(c) = subtask_sql::claim(pool, "bench-finish", 1).await?.pop() else {
        return Ok(None);
    };
    let item = Finished {
        run: RunKey {
            id: c.id,
            run_time: c.run_time,
            executor: "bench-finish".into(),
        },
        task_id: c.task_id,
        operation: c.operation,
        retry_limit: c.retry_limit,
        class_name: c.class_name,
        outcome: Outcome::Succeeded(None),
    };
    let t = Instant::now();
    let applied = engine::finish_batch(pool, cfg, std::slice::from_ref(&item)).await?;
    anyhow::ensure!(applied == [true], "a bench finish was fenced out");
    Ok(Some(t.elapsed().as_secs_f64() * 1000.0))
}

/// Up to `n` timed finishes, one at a time; the first `skip` are not kept
/// (a root's finish promotes the whole first wave).
async fn timed_finishes(pool: &PgPool, n: usize, skip: usize) -> anyhow::Result<Vec<f64>> {
    let cfg = EngineConfig::default();
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + skip {
        match timed_finish(pool, &cfg).await? {
            Some(ms) if i >= skip => lat.push(ms),
            Some(_) => {}
            None => break,
        }
    }
    Ok(lat)
}

fn summary(mut lat: Vec<f64>) -> serde_json::Value {
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let mean = lat.iter().sum::<f64>() / lat.len().max(1) as f64;
    json!({"finishes": lat.len(), "mean_ms": round2(mean), "p50_ms": round2(pct(0.5)),
           "p99_ms": round2(pct(0.99))})
}

/// The `big` scenario: `finishes` single finishes of one `nodes`-node task
/// (a split, concurrency limit 10 like every bench task), then as many of
/// 11-node restart tasks, each timed alone in this process (no workers
/// run meanwhile). The big task is deleted unfinished.
pub async fn big(pool: &PgPool, nodes: usize, finishes: usize) -> anyhow::Result<()> {
    let (task, spec) = split_task(1, nodes.saturating_sub(2).max(1), 10);
    let t = Instant::now();
    let id = engine::submit(pool, &task, &spec).await?.id();
    let submit_ms = t.elapsed().as_secs_f64() * 1000.0;
    bench_sql::analyze(pool).await?;
    let big = timed_finishes(pool, finishes, 1).await?;
    // Out of the way of the scenarios after this one.
    bench_sql::delete_task(pool, id).await?;
    let small_spec = DagSpec {
        nodes: dag_nodes(),
        context: Context::default(),
    };
    let tasks = finishes.div_ceil(11).max(1);
    for i in 0..tasks {
        engine::submit(pool, &bench_task(i), &small_spec).await?;
    }
    // Every one of their finishes, so that none is left RUNNING.
    let small = timed_finishes(pool, tasks * small_spec.nodes.len(), 0).await?;
    let mean = |l: &[f64]| l.iter().sum::<f64>() / l.len().max(1) as f64;
    let ratio = mean(&big) / mean(&small).max(1e-9);
    emit(json!({
        "scenario": "big", "nodes": nodes, "submit_ms": round2(submit_ms),
        "big_finish": summary(big), "restart_finish": summary(small),
        "finish_cost_over_restart": round2(ratio),
    }));
    Ok(())
}
