//! The engine through PostgreSQL faults the test injects itself: a real
//! restart of a private cluster, a black-holed link (partition) and a
//! commit whose reply is lost, driven by the proxy in `faults`.

use crate::faults::pgcluster::{PgCluster, StopMode};
use crate::faults::proxy::{AfterDrop, Proxy};
use crate::support::engine::{fast_cfg, new_task};
use crate::support::{wait_for, TestDb};
use async_trait::async_trait;
use sqlx::PgPool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use taskd::actions::{Action, ActionResult, Registry, Run};
use taskd::dag::{DagSpec, NodeSpec};
use taskd::engine::{self, EngineConfig, Submitted, Sweeper, Worker};
use taskd::model::{SubtaskStatus as S, TaskId, TaskStatus};
use taskd::store;
use tokio_util::sync::CancellationToken;

/// One execution of a step: (subtask, run_time, started, ended).
type Execution = (i64, i32, Instant, Option<Instant>);

/// `rec.step?ms=N`: sleeps N ms like `test.sleep`, recording when each
/// execution starts and when it stops (ends, is cancelled or dropped), so
/// a test can check that two executions of a step never overlap. Nothing
/// fences it: the worker must stop it itself.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Execution>>>);

struct Ends(Arc<Mutex<Vec<Execution>>>, usize);

impl Drop for Ends {
    fn drop(&mut self) {
        let mut v = self.0.lock().unwrap();
        v[self.1].3 = Some(Instant::now());
    }
}

#[async_trait]
impl Action for Recorder {
    async fn execute(&self, run: &mut Run) -> ActionResult {
        let ms: u64 = run.params.get("ms").map_or(100, |v| v.parse().unwrap());
        let i = {
            let mut v = self.0.lock().unwrap();
            v.push((run.subtask_id, run.run_time, Instant::now(), None));
            v.len() - 1
        };
        let _ends = Ends(self.0.clone(), i);
        run.sleep(Duration::from_millis(ms)).await
    }
}

/// `rec.fenced?ms=N`: `rec.step` declared fenced by its host agent, so a
/// worker that loses PostgreSQL keeps it running.
struct Fenced(Recorder);

#[async_trait]
impl Action for Fenced {
    async fn execute(&self, run: &mut Run) -> ActionResult {
        self.0.execute(run).await
    }

    fn fenced_by_agent(&self) -> bool {
        true
    }
}

impl Recorder {
    fn registry(&self) -> Registry {
        let mut r = Registry::standard();
        r.register("rec.step", self.clone());
        r.register("rec.fenced", Fenced(self.clone()));
        r
    }

    fn executions(&self) -> Vec<Execution> {
        self.0.lock().unwrap().clone()
    }

    /// Panics when two executions of one subtask overlapped in time.
    fn assert_no_overlap(&self) {
        let all = self.executions();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                if a.0 != b.0 {
                    continue;
                }
                let (first, second) = if a.2 <= b.2 { (a, b) } else { (b, a) };
                let end = first.3.expect("an execution still running at the end");
                assert!(
                    end <= second.2,
                    "two executions of subtask {} overlapped: run {} until {:?}, run {} from {:?}",
                    first.0,
                    first.1,
                    end.duration_since(first.2),
                    second.1,
                    second.2.duration_since(first.2)
                );
            }
        }
    }
}

async fn submit_on(pool: &PgPool, name: &str, nodes: Vec<NodeSpec>) -> TaskId {
    let task = new_task(name);
    let spec = DagSpec {
        nodes,
        context: task.context.clone(),
    };
    match engine::submit(pool, &task, &spec).await.unwrap() {
        Submitted::Created(id) => id,
        other => panic!("expected a new task, got {other:?}"),
    }
}

/// Starts a worker and a sweeper on a pool of their own, as a process.
async fn process(
    url: &str,
    registry: Registry,
    cfg: &EngineConfig,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let pool = taskd::db::connect(url, 8).await.unwrap();
    let w = Worker::new(pool.clone(), registry, cfg.clone());
    let s = Sweeper::new(pool, cfg.clone());
    let (a, b) = (stop.clone(), stop.clone());
    vec![
        tokio::spawn(async move {
            w.run(a).await.unwrap();
        }),
        tokio::spawn(async move { s.run(b).await }),
    ]
}

/// The tasks' statuses; None while the test's own pool has not got over
/// the fault yet.
async fn try_statuses(pool: &PgPool, ids: &[TaskId]) -> Option<Vec<TaskStatus>> {
    let mut out = Vec::new();
    for id in ids {
        out.push(store::task::get(pool, *id).await.ok()??.status);
    }
    Some(out)
}

async fn statuses(pool: &PgPool, ids: &[TaskId]) -> Vec<TaskStatus> {
    try_statuses(pool, ids).await.unwrap()
}

#[tokio::test]
async fn an_eight_second_restart_fails_no_run_and_overlaps_none() {
    let cluster = PgCluster::start().await;
    let url = cluster.database().await;
    let pool = taskd::db::connect(&url, 4).await.unwrap();
    let rec = Recorder::default();
    let mut tasks = Vec::new();
    for i in 0..6 {
        tasks.push(
            submit_on(
                &pool,
                &format!("t{i}"),
                vec![
                    NodeSpec::new("a", "rec.step?ms=1500", 60).retries(2),
                    NodeSpec::new("b", "rec.step?ms=300", 60)
                        .after(&["a"])
                        .retries(2),
                ],
            )
            .await,
        );
    }
    let fenced = submit_on(
        &pool,
        "fenced",
        vec![NodeSpec::new("long", "rec.fenced?ms=11000", 60).retries(2)],
    )
    .await;
    let cfg = fast_cfg();
    let stop = CancellationToken::new();
    let mut handles = process(&url, rec.registry(), &cfg, &stop).await;
    handles.extend(process(&url, rec.registry(), &cfg, &stop).await);
    wait_for("runs in flight", Duration::from_secs(20), || async {
        (rec.executions().len() >= 4).then_some(())
    })
    .await;
    cluster
        .stop_for(Duration::from_secs(8), StopMode::Fast)
        .await;
    let back = Instant::now();
    wait_for("every task to settle", Duration::from_secs(60), || async {
        let s = try_statuses(&pool, &tasks).await?;
        s.iter().all(|s| *s != TaskStatus::Running).then_some(())
    })
    .await;
    println!("settled {:?} after PostgreSQL was back", back.elapsed());
    assert!(statuses(&pool, &tasks)
        .await
        .iter()
        .all(|s| *s == TaskStatus::Successful));
    for t in &tasks {
        for s in store::subtask::list_for_task(&pool, *t).await.unwrap() {
            assert_eq!(s.status, S::Successful);
            assert_eq!(
                s.run_time, 1,
                "{}: no run failed for the outage: {:?}",
                s.name, s.error
            );
        }
    }
    rec.assert_no_overlap();
    // The agent-fenced step ran on through the outage: one execution.
    wait_for(
        "the fenced step to succeed",
        Duration::from_secs(30),
        || async {
            (try_statuses(&pool, &[fenced]).await?[0] == TaskStatus::Successful).then_some(())
        },
    )
    .await;
    let long = store::subtask::list_for_task(&pool, fenced).await.unwrap()[0].clone();
    assert_eq!(long.run_time, 1);
    let runs = rec
        .executions()
        .into_iter()
        .filter(|e| e.0 == long.id)
        .count();
    assert_eq!(runs, 1, "a fenced step is not stopped by an outage");
    stop.cancel();
    for h in handles {
        h.await.unwrap();
    }
}

#[tokio::test]
async fn a_partitioned_worker_stops_its_attempt_before_another_begins() {
    let db = TestDb::new().await;
    let proxy = Proxy::for_url(&db.url).await;
    let rec = Recorder::default();
    let id = submit_on(
        &db.pool,
        "partition",
        vec![NodeSpec::new("long", "rec.step?ms=4000", 60).retries(2)],
    )
    .await;
    let cfg = fast_cfg();
    let stop_a = CancellationToken::new();
    let a_pool = taskd::db::connect(&proxy.url(&db.url), 4).await.unwrap();
    let a = Worker::new(a_pool, rec.registry(), cfg.clone());
    let a_run = tokio::spawn(a.run(stop_a.clone()));
    wait_for(
        "worker A to run the step",
        Duration::from_secs(20),
        || async { (!rec.executions().is_empty()).then_some(()) },
    )
    .await;
    // The rest of the world (a sweeper, worker B) reaches PostgreSQL; A's
    // packets are dropped, not refused.
    let stop = CancellationToken::new();
    let handles = process(&db.url, rec.registry(), &cfg, &stop).await;
    proxy.black_hole();
    let r = wait_for(
        "run 2 to start elsewhere",
        Duration::from_secs(20),
        || async {
            let e = rec.executions();
            e.iter().find(|x| x.1 == 2).cloned()
        },
    )
    .await;
    let first = rec.executions()[0];
    let end = first.3.expect("A's attempt stopped before run 2 began");
    assert!(end <= r.2, "A's attempt ran on beside run 2");
    proxy.normal();
    wait_for("the task to succeed", Duration::from_secs(30), || async {
        (statuses(&db.pool, &[id]).await[0] == TaskStatus::Successful).then_some(())
    })
    .await;
    rec.assert_no_overlap();
    stop_a.cancel();
    stop.cancel();
    a_run.await.unwrap().unwrap();
    for h in handles {
        h.await.unwrap();
    }
}

#[tokio::test]
async fn the_successors_of_a_commit_whose_reply_was_lost_run() {
    let db = TestDb::new().await;
    let proxy = Proxy::for_url(&db.url).await;
    let id = submit_on(
        &db.pool,
        "lost reply",
        vec![
            NodeSpec::new("a", "test.noop", 60),
            NodeSpec::new("b", "test.noop", 60).after(&["a"]),
            NodeSpec::new("c", "test.noop", 60).after(&["b"]),
        ],
    )
    .await;
    // The first COMMIT through the proxy is the finish of `a`, which also
    // starts `b` for this worker: its reply never arrives.
    proxy.drop_reply_to("COMMIT", AfterDrop::Reset);
    let cfg = fast_cfg();
    let stop = CancellationToken::new();
    let pool = taskd::db::connect(&proxy.url(&db.url), 4).await.unwrap();
    let w = Worker::new(pool, Registry::standard(), cfg);
    let run = tokio::spawn(w.run(stop.clone()));
    // Well before b's lease (60 s) could pass.
    wait_for("the task to succeed", Duration::from_secs(15), || async {
        (statuses(&db.pool, &[id]).await[0] == TaskStatus::Successful).then_some(())
    })
    .await;
    assert_eq!(proxy.replies_dropped(), 1);
    for s in store::subtask::list_for_task(&db.pool, id).await.unwrap() {
        assert_eq!((s.status, s.run_time), (S::Successful, 1), "{}", s.name);
    }
    stop.cancel();
    run.await.unwrap().unwrap();
}
