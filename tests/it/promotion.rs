//! One promotion rule: the finish statement promotes successors in SQL
//! (`store::subtask::end_and_promote`), user actions and the cases it leaves
//! go through the general path in Rust (`engine::finish::after_change`).
//! This differential test runs the same DAGs through both paths, step by
//! step, and compares every row after every step.

use crate::support::engine::{assert_active_counts_exact, new_task, submit_with};
use crate::support::TestDb;
use std::time::Duration;
use taskd::dag::NodeSpec;
use taskd::engine::{self, EngineConfig, Finished, Outcome, Promotion};
use taskd::model::{SubtaskOperation, TaskId, TaskStatus};
use taskd::store::{self, subtask::Claimed, subtask::RunKey, task::NewTask};

fn cfg() -> EngineConfig {
    EngineConfig {
        // No backoff, so that a retried run is claimable at the next step
        // in both databases alike.
        retry_backoff: Duration::ZERO,
        retry_backoff_cap: Duration::ZERO,
        ..EngineConfig::default()
    }
}

/// What the test actions would do, decided from the className alone so
/// that both databases see the same outcomes.
fn outcome_of(c: &Claimed) -> Outcome {
    let (name, query) = c.class_name.split_once('?').unwrap_or((&c.class_name, ""));
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    if c.operation == SubtaskOperation::Rollback {
        return Outcome::Succeeded(None);
    }
    match name {
        "test.fail" => {
            let times: i32 = param("times").map_or(i32::MAX, |t| t.parse().unwrap());
            if c.run_time <= times {
                Outcome::Failed {
                    error: format!("injected failure on run {}", c.run_time),
                    cancelled: false,
                }
            } else {
                Outcome::Succeeded(None)
            }
        }
        "test.set" => {
            let mut ctx = c.context.0.clone();
            ctx.set(param("key").unwrap(), param("value").unwrap_or_default());
            Outcome::Succeeded(Some(ctx))
        }
        _ => Outcome::Succeeded(None),
    }
}

/// Claims every runnable subtask and finishes them all by `promotion`.
/// Returns how many ran.
async fn step(db: &TestDb, promotion: Promotion) -> usize {
    let claimed = store::subtask::claim(&db.pool, "differential", 1000)
        .await
        .unwrap();
    let items: Vec<Finished> = claimed
        .iter()
        .map(|c| Finished {
            run: RunKey {
                id: c.id,
                run_time: c.run_time,
                executor: "differential".into(),
            },
            task_id: c.task_id,
            operation: c.operation,
            retry_limit: c.retry_limit,
            class_name: c.class_name.clone(),
            outcome: outcome_of(c),
        })
        .collect();
    let applied = engine::finish_batch_with(&db.pool, &cfg(), &items, promotion)
        .await
        .unwrap();
    assert!(applied.iter().all(|a| *a));
    claimed.len()
}

/// Every row of the task that both paths must agree on.
async fn snapshot(db: &TestDb, id: TaskId) -> Vec<String> {
    let task = store::task::get(&db.pool, id).await.unwrap().unwrap();
    let mut rows = vec![format!("task {} {}", task.status, task.operation)];
    for s in store::subtask::list_for_task(&db.pool, id).await.unwrap() {
        rows.push(format!(
            "{} #{} {} {} run {} up {} down {} ctx {} err {:?} executor {}",
            s.name,
            s.parallel_idx,
            s.status,
            s.operation,
            s.run_time,
            s.pending_upstreams,
            s.pending_downstreams,
            s.context
                .as_ref()
                .map(|c| serde_json::to_string(&c.0).unwrap())
                .unwrap_or_default(),
            s.error,
            s.executor.is_some(),
        ));
    }
    rows
}

/// Runs every DAG of `cases` in two databases, one per promotion path,
/// until neither runs anything, comparing every task after each step; a
/// FAILED task whose case asks for it is rolled back and driven on the same
/// way. Returns each task's final status.
async fn differential(cases: Vec<(&str, NewTask, Vec<NodeSpec>, bool)>) -> Vec<TaskStatus> {
    let (sql, general) = (TestDb::new().await, TestDb::new().await);
    let (mut tasks, mut to_roll_back) = (Vec::new(), Vec::new());
    for (what, task, nodes, rollback) in cases {
        let a = submit_with(&sql, task.clone(), nodes.clone()).await;
        let b = submit_with(&general, task, nodes).await;
        tasks.push((what, a, b));
        to_roll_back.push(rollback);
    }
    let compare = |when: String| {
        let (sql, general, tasks) = (&sql, &general, &tasks);
        async move {
            assert_active_counts_exact(sql).await;
            assert_active_counts_exact(general).await;
            for (what, a, b) in tasks {
                assert_eq!(
                    snapshot(sql, *a).await,
                    snapshot(general, *b).await,
                    "{what}: {when}"
                );
            }
        }
    };
    compare("after submit".into()).await;
    for n in 0.. {
        assert!(n < 100, "the tasks do not settle");
        let ran = step(&sql, Promotion::InStatement).await;
        assert_eq!(ran, step(&general, Promotion::General).await, "step {n}");
        compare(format!("after step {n}")).await;
        if ran > 0 {
            continue;
        }
        let mut rolled = false;
        for ((_, a, b), rollback) in tasks.iter().zip(to_roll_back.iter_mut()) {
            let status = store::task::get(&sql.pool, *a)
                .await
                .unwrap()
                .unwrap()
                .status;
            if status == TaskStatus::Failed && *rollback {
                *rollback = false;
                rolled = true;
                engine::rollback_task(&sql.pool, *a).await.unwrap();
                engine::rollback_task(&general.pool, *b).await.unwrap();
            }
        }
        if !rolled {
            break;
        }
        compare(format!("after rollback at step {n}")).await;
    }
    let mut out = Vec::new();
    for (_, a, _) in &tasks {
        out.push(
            store::task::get(&sql.pool, *a)
                .await
                .unwrap()
                .unwrap()
                .status,
        );
    }
    out
}

#[tokio::test]
async fn both_promotion_paths_leave_every_row_alike() {
    let chain = vec![
        NodeSpec::new("a", "test.set?key=a&value=1", 10),
        NodeSpec::new("b", "test.set?key=b&value=2", 10).after(&["a"]),
        NodeSpec::new("c", "test.noop", 10).after(&["b"]),
    ];
    let diamond = vec![
        NodeSpec::new("a", "test.set?key=a&value=1", 10),
        NodeSpec::new("b", "test.set?key=b&value=2", 10).after(&["a"]),
        NodeSpec::new("c", "test.set?key=c&value=3", 10).after(&["a"]),
        NodeSpec::new("d", "test.noop", 10).after(&["b", "c"]),
        NodeSpec::new("e", "test.noop", 10).after(&["d"]),
    ];
    let conflict = vec![
        NodeSpec::new("a", "test.noop", 10),
        NodeSpec::new("b", "test.set?key=k&value=left", 10).after(&["a"]),
        NodeSpec::new("c", "test.set?key=k&value=right", 10).after(&["a"]),
        NodeSpec::new("d", "test.noop", 10).after(&["b", "c"]),
    ];
    let mut wide: Vec<NodeSpec> = (0..9)
        .map(|i| NodeSpec::new(&format!("r{i}"), "test.noop", 10))
        .collect();
    let roots: Vec<String> = (0..9).map(|i| format!("r{i}")).collect();
    let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
    wide.push(NodeSpec::new("join", "test.noop", 10).after(&roots));
    let mut fan = vec![NodeSpec::new("root", "test.set?key=r&value=1", 10)];
    for i in 0..6 {
        fan.push(NodeSpec::new(&format!("c{i}"), "test.noop", 10).after(&["root"]));
        fan.push(
            NodeSpec::new(&format!("g{i}"), "test.noop", 10).after(&[format!("c{i}").as_str()]),
        );
    }
    let split = vec![
        NodeSpec::new("prepare", "test.noop", 10),
        NodeSpec::new("each", "test.set?key=e&value=1", 10)
            .after(&["prepare"])
            .split_on("ids"),
        NodeSpec::new("finish", "test.noop", 10).after(&["each"]),
    ];
    let retried = vec![
        NodeSpec::new("a", "test.noop", 10),
        NodeSpec::new("b", "test.fail?times=2", 10)
            .after(&["a"])
            .retries(2),
        NodeSpec::new("c", "test.noop", 10).after(&["b"]),
    ];
    let failed = vec![
        NodeSpec::new("a", "test.set?key=a&value=1", 10),
        NodeSpec::new("b", "test.noop", 10).after(&["a"]),
        NodeSpec::new("c", "test.fail", 10).after(&["a"]),
        NodeSpec::new("d", "test.noop", 10).after(&["b", "c"]),
    ];
    let limited = |n: i32| {
        let mut t = new_task("differential");
        t.max_concurrency = n;
        t.context.set("cluster", "c1");
        t.context
            .list_map
            .insert("ids".into(), vec!["7".into(), "8".into(), "9".into()]);
        t
    };
    use TaskStatus::{Failed, Successful};
    let cases = [
        ("chain", chain, 10, false, Successful),
        ("diamond", diamond.clone(), 10, false, Successful),
        ("diamond, one slot", diamond, 1, false, Successful),
        ("conflict", conflict, 10, false, Failed),
        ("wide", wide.clone(), 10, false, Successful),
        ("wide, three slots", wide, 3, false, Successful),
        ("fan-out, two slots", fan, 2, false, Successful),
        ("split", split.clone(), 10, false, Successful),
        ("split, two slots", split, 2, false, Successful),
        ("retried", retried, 10, false, Successful),
        ("failed, rolled back", failed, 10, true, Successful),
    ];
    let want: Vec<(&str, TaskStatus)> = cases.iter().map(|c| (c.0, c.4)).collect();
    let got = differential(
        cases
            .into_iter()
            .map(|(what, nodes, conc, rollback, _)| (what, limited(conc), nodes, rollback))
            .collect(),
    )
    .await;
    for ((what, want), got) in want.into_iter().zip(got) {
        assert_eq!(got, want, "{what}");
    }
}
