//! `taskd bench`: throughput and latency of the engine against a fresh
//! database of its own, with worker child processes, and PostgreSQL's own
//! commit rate (`pgbench -N`) on the same machine for comparison. Prints one
//! JSON line per scenario; asserts nothing.

use crate::dag::{templates::Template, DagSpec, NodeSpec};
use crate::model::{Context, TaskType};
use crate::store::bench as bench_sql;
use crate::store::task::NewTask;
use crate::{db, engine};
use clap::Args;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

mod api;
mod history;
mod pgbench;
mod retention;
mod shape;

use api::api_scenario;
use pgbench::run_pgbench;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Server to create the bench database on (any database URL on it).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,

    /// Scenarios to run, comma-separated: flat, dag, wide, big, latency, api,
    /// pgbench, history, prune, retention (these three are not in the
    /// default list: they build a large history first, or run for minutes).
    #[arg(
        long,
        env = "TASKD_BENCH_SCENARIOS",
        default_value = "flat,dag,wide,big,latency,api,pgbench"
    )]
    pub scenarios: String,

    /// Parallel copies of the one task of the wide scenario.
    #[arg(long, env = "TASKD_BENCH_WIDE_COPIES", default_value_t = 10_000)]
    pub wide_copies: usize,

    /// Nodes of the one task of the big scenario.
    #[arg(long, env = "TASKD_BENCH_BIG_NODES", default_value_t = 50_000)]
    pub big_nodes: usize,

    /// Timed single finishes of the big task (and of 11-node tasks) in the
    /// big scenario.
    #[arg(long, env = "TASKD_BENCH_BIG_FINISHES", default_value_t = 200)]
    pub big_finishes: usize,

    /// One-subtask no-op tasks in the flat scenario.
    #[arg(long, env = "TASKD_BENCH_TASKS", default_value_t = 5000)]
    pub tasks: usize,

    /// No-op restart-template tasks (11 subtasks each) in the dag scenario.
    #[arg(long, env = "TASKD_BENCH_DAG_TASKS", default_value_t = 1000)]
    pub dag_tasks: usize,

    /// Worker processes (`taskd worker` children).
    #[arg(long, env = "TASKD_BENCH_PROCESSES", default_value_t = 2)]
    pub processes: usize,

    /// Slots (concurrent subtasks, and claim batch bound) per worker process.
    #[arg(long, env = "TASKD_BENCH_SLOTS", default_value_t = 64)]
    pub slots: usize,

    /// Most finished runs written per transaction.
    #[arg(long, env = "TASKD_BENCH_FINISH_BATCH", default_value_t = 128)]
    pub finish_batch: usize,

    /// Finished subtasks to put in the history before measuring.
    #[arg(long, env = "TASKD_BENCH_HISTORY", default_value_t = 0)]
    pub history: i64,

    /// Tasks (10 subtasks each) the history scenario builds before it times
    /// the task list and README's history queries.
    #[arg(long, env = "TASKD_BENCH_HISTORY_TASKS", default_value_t = 1_000_000)]
    pub history_tasks: i64,

    /// Timed calls of each list call and query in the history scenario.
    #[arg(long, env = "TASKD_BENCH_HISTORY_SAMPLES", default_value_t = 30)]
    pub history_samples: usize,

    /// Finished subtasks (in tasks of 10, 100 days old) the prune scenario
    /// builds and then prunes while the flat load runs.
    #[arg(long, env = "TASKD_BENCH_PRUNE_SUBTASKS", default_value_t = 5_000_000)]
    pub prune_subtasks: i64,

    /// Seconds the retention scenario runs its load.
    #[arg(long, env = "TASKD_BENCH_RETENTION_SECONDS", default_value_t = 180)]
    pub retention_seconds: u64,

    /// Retention of the retention scenario, in seconds.
    #[arg(long, env = "TASKD_BENCH_RETENTION_AGE_SECS", default_value_t = 30)]
    pub retention_age_secs: u64,

    /// Seconds of the latency scenario's steady load.
    #[arg(long, env = "TASKD_BENCH_LATENCY_SECONDS", default_value_t = 10)]
    pub latency_seconds: u64,

    /// Restart requests per second in the API scenario.
    #[arg(long, env = "TASKD_BENCH_API_RATE", default_value_t = 200)]
    pub api_rate: u64,

    /// Seconds of the API scenario.
    #[arg(long, env = "TASKD_BENCH_API_SECONDS", default_value_t = 5)]
    pub api_seconds: u64,

    /// Seconds pgbench -N runs.
    #[arg(long, env = "TASKD_BENCH_PGBENCH_SECONDS", default_value_t = 10)]
    pub pgbench_seconds: u64,

    /// Keep the bench database afterwards.
    #[arg(long, env = "TASKD_BENCH_KEEP")]
    pub keep: bool,

    /// Run against this database kept by an earlier `--keep` run (named in
    /// its first line) instead of a fresh one, and keep it: the history
    /// scenario then times the history already there instead of building
    /// one, so a second run of the timings takes minutes, not a rebuild.
    #[arg(long, env = "TASKD_BENCH_REUSE_DATABASE", value_parser = bench_database_name)]
    pub reuse_database: Option<String>,
}

/// A database name the bench made: `taskd_bench_` and digits.
fn bench_database_name(s: &str) -> Result<String, String> {
    match s.strip_prefix("taskd_bench_") {
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => Ok(s.to_string()),
        _ => Err(format!(
            "{s:?} is not a bench database (taskd_bench_<digits>)"
        )),
    }
}

fn db_url(base: &str, name: &str) -> String {
    match base.rfind('/') {
        Some(i) if base[..i].contains("//") => format!("{}/{}", &base[..i], name),
        _ => format!("{base}/{name}"),
    }
}

fn flat_nodes() -> Vec<NodeSpec> {
    vec![NodeSpec::new("noop", "test.noop", 60)]
}

fn dag_nodes() -> Vec<NodeSpec> {
    Template::RestartObserver
        .nodes()
        .into_iter()
        .map(|mut n| {
            n.class_name = "test.noop".into();
            n
        })
        .collect()
}

fn bench_task(i: usize) -> NewTask {
    NewTask {
        name: format!("bench {i}"),
        task_type: TaskType::Manual,
        creator: "bench".into(),
        executor: None,
        cluster_id: None,
        host_id: None,
        server_id: None,
        target_key: None,
        holds: Vec::new(),
        context: Context::default(),
        prohibit_rollback: false,
        max_concurrency: 10,
        trace_id: format!("bench-{i}"),
        idempotency_key: None,
    }
}

/// Submits `n` tasks with `parallel` concurrent submitters; returns tasks/s.
async fn submit_many(
    pool: &PgPool,
    n: usize,
    nodes: &[NodeSpec],
    parallel: usize,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let spec = DagSpec {
        nodes: nodes.to_vec(),
        context: Context::default(),
    };
    let mut handles = Vec::new();
    for p in 0..parallel {
        let pool = pool.clone();
        let spec = spec.clone();
        handles.push(tokio::spawn(async move {
            let mut i = p;
            while i < n {
                engine::submit(&pool, &bench_task(i), &spec).await?;
                i += parallel;
            }
            anyhow::Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

struct Workers {
    children: Vec<Child>,
}

impl Workers {
    async fn start(args: &BenchArgs, url: &str) -> anyhow::Result<Workers> {
        let exe = std::env::current_exe()?;
        let mut children = Vec::new();
        for _ in 0..args.processes {
            let child = Command::new(&exe)
                .arg("worker")
                .env("DATABASE_URL", url)
                .env("TASKD_WORKER_SLOTS", args.slots.to_string())
                .env("TASKD_FINISH_BATCH", args.finish_batch.to_string())
                .env("TASKD_DB_MAX_CONNECTIONS", "8")
                // The prune and retention scenarios run their own passes.
                .env("TASKD_RETENTION", "0")
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?;
            children.push(child);
        }
        Ok(Workers { children })
    }

    /// Peak resident memory of each worker process, in MiB.
    fn peak_rss_mib(&self) -> Vec<f64> {
        self.children
            .iter()
            .filter_map(|c| c.id())
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .filter_map(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map(|kb| (kb / 1024.0 * 10.0).round() / 10.0)
            .collect()
    }

    async fn stop(mut self) {
        crate::app::terminate_children(&mut self.children, Duration::from_secs(15)).await;
    }
}

async fn wait_all_done(pool: &PgPool, limit: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + limit;
    loop {
        if bench_sql::running_tasks(pool).await? == 0 {
            return Ok(());
        }
        if Instant::now() > end {
            anyhow::bail!("tasks still RUNNING after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Subtasks per second measured from the database's own timestamps: first
/// claim to last finish, over runs started after `since_id`.
async fn measured_rate(pool: &PgPool, since_id: i64) -> anyhow::Result<(i64, f64)> {
    let (n, secs) = bench_sql::succeeded_since(pool, since_id).await?;
    let secs = secs.unwrap_or(0.0).max(1e-6);
    Ok((n, n as f64 / secs))
}

/// Handoff latency (READY → RUNNING) percentiles in ms over the first runs
/// of root subtasks, which always wait READY for a claim.
async fn handoff_ms(pool: &PgPool, since_id: i64) -> anyhow::Result<(f64, f64)> {
    let (p50, p99) = bench_sql::root_handoff_ms(pool, since_id).await?;
    Ok((round2(p50.unwrap_or(0.0)), round2(p99.unwrap_or(0.0))))
}

/// Step gap percentiles in ms: from the last upstream's finish to a
/// downstream subtask's start (the finishing worker usually starts it in
/// the same transaction; otherwise it waits READY for a claim).
async fn step_gap_ms(pool: &PgPool, since_id: i64) -> anyhow::Result<(f64, f64)> {
    let (p50, p99) = bench_sql::step_gap_ms(pool, since_id).await?;
    Ok((round2(p50.unwrap_or(0.0)), round2(p99.unwrap_or(0.0))))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// End-to-end latency of one no-op restart task, in ms (submit → settled).
async fn one_restart_ms(pool: &PgPool) -> anyhow::Result<f64> {
    let spec = DagSpec {
        nodes: dag_nodes(),
        context: Context::default(),
    };
    let start = Instant::now();
    let id = engine::submit(pool, &bench_task(usize::MAX), &spec)
        .await?
        .id();
    loop {
        let status = bench_sql::task_status(pool, id).await?;
        if status != "RUNNING" {
            return Ok(round2(start.elapsed().as_secs_f64() * 1000.0));
        }
        if start.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("the restart task did not settle in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn fill_history(pool: &PgPool, n: i64) -> anyhow::Result<()> {
    if n <= 0 {
        return Ok(());
    }
    // One finished task per 10 subtasks, each a chain (9 edges), inserted
    // in chunks.
    let chunk = 100_000i64;
    let mut done = 0;
    while done < n {
        let k = chunk.min(n - done);
        bench_sql::insert_history(pool, k).await?;
        done += k;
    }
    bench_sql::analyze(pool).await?;
    Ok(())
}

fn emit(v: Value) {
    println!("{v}");
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let scenarios: Vec<&str> = args.scenarios.split(',').map(str::trim).collect();
    let admin = db::connect(&args.database_url, 2).await?;
    let name = match &args.reuse_database {
        Some(name) => name.clone(),
        None => {
            let name = format!("taskd_bench_{}", std::process::id());
            bench_sql::recreate_database(&admin, &name).await?;
            name
        }
    };
    let url = db_url(&args.database_url, &name);
    db::migrate(&url).await?;
    let pool = db::connect(&url, 16).await?;
    emit(json!({
        "bench": "taskd", "version": env!("CARGO_PKG_VERSION"), "database": name,
        "date": chrono::Utc::now().to_rfc3339(), "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "processes": args.processes, "slots": args.slots, "finish_batch": args.finish_batch,
    }));
    if args.history > 0 {
        let t = Instant::now();
        fill_history(&pool, args.history).await?;
        emit(
            json!({"scenario": "history", "finished_subtasks": args.history, "seconds": round2(t.elapsed().as_secs_f64())}),
        );
    }

    let mut flat_rate = None;
    let mut flat_submit_rate = None;
    let mut dag_rate = None;
    if scenarios.contains(&"flat") {
        let since = bench_sql::max_subtask_id(&pool).await?;
        let submit_rate = submit_many(&pool, args.tasks, &flat_nodes(), 8).await?;
        let c0 = bench_sql::commits(&pool).await?;
        let workers = Workers::start(&args, &url).await?;
        wait_all_done(&pool, Duration::from_secs(600)).await?;
        let c1 = bench_sql::commits(&pool).await?;
        let rss = workers.peak_rss_mib();
        workers.stop().await;
        let (n, rate) = measured_rate(&pool, since).await?;
        flat_rate = Some(rate);
        flat_submit_rate = Some(submit_rate);
        emit(json!({
            "scenario": "flat", "tasks": args.tasks, "subtasks": n, "history": args.history,
            "subtasks_per_s": round2(rate), "submit_tasks_per_s": round2(submit_rate),
            "commits_per_subtask": round2((c1 - c0) as f64 / n.max(1) as f64),
            "worker_peak_rss_mib": rss,
        }));
    }
    if scenarios.contains(&"dag") {
        let since = bench_sql::max_subtask_id(&pool).await?;
        let submit_rate = submit_many(&pool, args.dag_tasks, &dag_nodes(), 8).await?;
        let c0 = bench_sql::commits(&pool).await?;
        let workers = Workers::start(&args, &url).await?;
        wait_all_done(&pool, Duration::from_secs(600)).await?;
        let c1 = bench_sql::commits(&pool).await?;
        let rss = workers.peak_rss_mib();
        workers.stop().await;
        let (n, rate) = measured_rate(&pool, since).await?;
        dag_rate = Some(rate);
        emit(json!({
            "scenario": "dag", "tasks": args.dag_tasks, "subtasks": n,
            "subtasks_per_s": round2(rate), "submit_tasks_per_s": round2(submit_rate),
            "commits_per_subtask": round2((c1 - c0) as f64 / n.max(1) as f64),
            "worker_peak_rss_mib": rss,
        }));
    }
    if scenarios.contains(&"wide") {
        shape::wide(&args, &pool, &url, args.wide_copies, dag_rate).await?;
    }
    if scenarios.contains(&"big") {
        shape::big(&pool, args.big_nodes, args.big_finishes).await?;
    }
    if scenarios.contains(&"latency") {
        let workers = Workers::start(&args, &url).await?;
        // Let the workers register and LISTEN.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let since = bench_sql::max_subtask_id(&pool).await?;
        let mut idle = Vec::new();
        for _ in 0..5 {
            idle.push(one_restart_ms(&pool).await?);
        }
        let (idle_p50, idle_p99) = handoff_ms(&pool, since).await?;
        let (gap_p50, gap_p99) = step_gap_ms(&pool, since).await?;
        idle.sort_by(f64::total_cmp);
        // Steady load at half of the peak. The peak is measured here, with
        // submitting and running sharing the machine as they do under the
        // steady load: one-subtask tasks submitted flat out by 8 clients
        // (about three seconds' worth at the flat submit rate), from the
        // first submit to the last task settled.
        let guess = flat_submit_rate.unwrap_or(1000.0);
        let burst = ((guess * 3.0) as usize).max(500);
        let t0 = Instant::now();
        submit_many(&pool, burst, &flat_nodes(), 8).await?;
        wait_all_done(&pool, Duration::from_secs(120)).await?;
        let peak = burst as f64 / t0.elapsed().as_secs_f64();
        let rate = (peak / 2.0).max(1.0);
        let since = bench_sql::max_subtask_id(&pool).await?;
        let load_pool = pool.clone();
        let secs = args.latency_seconds;
        let load = tokio::spawn(async move {
            let interval = Duration::from_secs_f64(1.0 / rate);
            let end = Instant::now() + Duration::from_secs(secs);
            let spec = DagSpec {
                nodes: flat_nodes(),
                context: Context::default(),
            };
            let mut next = Instant::now();
            let mut i = 0usize;
            let mut inflight = tokio::task::JoinSet::new();
            while Instant::now() < end {
                let pool = load_pool.clone();
                let spec = spec.clone();
                inflight.spawn(async move { engine::submit(&pool, &bench_task(i), &spec).await });
                i += 1;
                next += interval;
                tokio::time::sleep_until(next.into()).await;
            }
            while inflight.join_next().await.is_some() {}
            i
        });
        tokio::time::sleep(Duration::from_secs(secs / 2)).await;
        let loaded_e2e = one_restart_ms(&pool).await?;
        let submitted = load.await?;
        wait_all_done(&pool, Duration::from_secs(120)).await?;
        let (p50, p99) = handoff_ms(&pool, since).await?;
        workers.stop().await;
        emit(json!({
            "scenario": "latency",
            "idle": {"handoff_p50_ms": idle_p50, "handoff_p99_ms": idle_p99,
                     "step_gap_p50_ms": gap_p50, "step_gap_p99_ms": gap_p99,
                     "restart_e2e_ms": idle},
            "loaded": {"peak_tasks_per_s": round2(peak), "offered_tasks_per_s": round2(rate),
                       "submitted": submitted,
                       "handoff_p50_ms": p50, "handoff_p99_ms": p99, "restart_e2e_ms": loaded_e2e},
        }));
    }
    if scenarios.contains(&"prune") {
        retention::prune_scenario(&args, &pool, &url, args.prune_subtasks).await?;
    }
    if scenarios.contains(&"retention") {
        let age = Duration::from_secs(args.retention_age_secs);
        retention::retention_scenario(&args, &pool, &url, args.retention_seconds, age).await?;
    }
    if scenarios.contains(&"history") {
        history::scenario(&pool, args.history_tasks, args.history_samples).await?;
    }
    if scenarios.contains(&"api") {
        emit(api_scenario(&args, &pool).await?);
    }
    if scenarios.contains(&"pgbench") {
        if let Some(tps) = run_pgbench(&args, &admin).await? {
            emit(json!({
                "scenario": "ratio",
                "flat_subtasks_per_s_over_pgbench_tps": flat_rate.map(|r| round2(r / tps)),
                "dag_subtasks_per_s_over_pgbench_tps": dag_rate.map(|r| round2(r / tps)),
            }));
        }
    }
    pool.close().await;
    if !args.keep && args.reuse_database.is_none() {
        bench_sql::drop_database(&admin, &name, true).await?;
    }
    Ok(())
}
