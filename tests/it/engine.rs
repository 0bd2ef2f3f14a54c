//! The engine against a real database: DAG order, claiming, crash recovery,
//! the state machine's user actions, context and migrations.

use crate::support::engine::{fast_cfg, new_task, submit, submit_with, worker};
use crate::support::{wait_for, TestDb};
use std::collections::HashMap;
use std::time::Duration;
use taskd::dag::{DagSpec, NodeSpec};
use taskd::engine::{self, Worker};
use taskd::model::{
    Context, SubtaskId, SubtaskOperation as SOp, SubtaskStatus as S, TaskId, TaskOperation,
    TaskStatus,
};
use taskd::store::{self, subtask::SubtaskRow};

async fn task_status(db: &TestDb, id: TaskId) -> (TaskStatus, TaskOperation) {
    let t = store::task::get(&db.pool, id).await.unwrap().unwrap();
    (t.status, t.operation)
}

async fn subtasks(db: &TestDb, id: TaskId) -> HashMap<String, SubtaskRow> {
    store::subtask::list_for_task(&db.pool, id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect()
}

#[tokio::test]
async fn diamond_runs_each_node_after_all_its_upstreams() {
    let db = TestDb::new().await;
    let id = submit(
        &db,
        vec![
            NodeSpec::new("a", "test.sleep?ms=20", 10),
            NodeSpec::new("b", "test.sleep?ms=30", 10).after(&["a"]),
            NodeSpec::new("c", "test.sleep?ms=5", 10).after(&["a"]),
            NodeSpec::new("d", "test.noop", 10).after(&["b", "c"]),
        ],
    )
    .await;
    let subs = subtasks(&db, id).await;
    assert_eq!(subs["a"].status, S::Ready);
    for n in ["b", "c", "d"] {
        assert_eq!(subs[n].status, S::Pending, "{n}");
    }
    let w = worker(&db);
    assert_eq!(w.drain().await.unwrap(), 4);
    assert_eq!(task_status(&db, id).await.0, TaskStatus::Successful);
    let subs = subtasks(&db, id).await;
    let edges = store::subtask::edges_for_tasks(&db.pool, &[id.0])
        .await
        .unwrap();
    assert_eq!(edges.len(), 4);
    let by_id: HashMap<i64, &SubtaskRow> = subs.values().map(|s| (s.id, s)).collect();
    for (up, down) in edges {
        let (u, d) = (by_id[&up], by_id[&down]);
        assert_eq!(u.status, S::Successful);
        assert!(
            d.start_time.unwrap() >= u.finish_time.unwrap(),
            "{} started before its upstream {} finished",
            d.name,
            u.name
        );
    }
    let t = store::task::get(&db.pool, id).await.unwrap().unwrap();
    assert!(t.finish_time.is_some());
}

#[tokio::test]
async fn three_workers_claiming_500_subtasks_never_claim_one_twice() {
    let db = TestDb::new().await;
    for i in 0..500 {
        submit_with(
            &db,
            new_task(&format!("flat {i}")),
            vec![NodeSpec::new("only", "test.noop", 10)],
        )
        .await;
    }
    let mut handles = Vec::new();
    for w in 0..3 {
        let pool = db.pool.clone();
        handles.push(tokio::spawn(async move {
            let me = format!("claimer-{w}");
            let mut mine = Vec::new();
            loop {
                let got = store::subtask::claim(&pool, &me, 7).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|c| c.id));
            }
        }));
    }
    let mut all = Vec::new();
    let mut per_worker = Vec::new();
    for h in handles {
        let mine = h.await.unwrap();
        per_worker.push(mine.len());
        all.extend(mine);
    }
    let total = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(
        total, 500,
        "every ready subtask claimed once ({per_worker:?})"
    );
    assert_eq!(all.len(), 500, "no subtask claimed twice");
    let running: i64 = sqlx::query_scalar(
        "select count(*) from subtask_instance where status = 'RUNNING' and run_time = 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(running, 500);
    let separators: i64 = sqlx::query_scalar("select count(*) from subtask_log")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(separators, 500, "one run opened per subtask");
}

#[tokio::test]
async fn three_full_workers_run_500_tasks_exactly_once() {
    let db = TestDb::new().await;
    for i in 0..500 {
        submit_with(
            &db,
            new_task(&format!("flat {i}")),
            vec![NodeSpec::new("only", "test.noop", 10)],
        )
        .await;
    }
    let workers: Vec<Worker> = (0..3).map(|_| worker(&db)).collect();
    let mut handles = Vec::new();
    for w in workers {
        handles.push(tokio::spawn(async move { w.drain().await.unwrap() }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    assert_eq!(total, 500);
    let done: i64 =
        sqlx::query_scalar("select count(*) from task_instance where status = 'SUCCESSFUL'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(done, 500);
    let reruns: i64 =
        sqlx::query_scalar("select count(*) from subtask_instance where run_time <> 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(reruns, 0);
}

#[tokio::test]
async fn dead_worker_run_is_rerun_by_another_and_its_late_finish_changes_nothing() {
    let db = TestDb::new().await;
    let id = submit(
        &db,
        vec![NodeSpec::new("slow", "test.sleep?ms=200", 30).retries(1)],
    )
    .await;
    // Worker A claims and runs, but never heartbeats again: it is "dead".
    let a = worker(&db);
    a.register().await.unwrap();
    let started = a.start().await.unwrap();
    assert_eq!(started.ids.len(), 1);
    let sub_id = started.ids[0];

    // Worker B runs for real, with its sweeper.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let cfg = fast_cfg();
    let b = worker(&db);
    let b_id = b.id().to_string();
    let sweeper = engine::Sweeper::new(db.pool.clone(), cfg.clone());
    let t0 = std::time::Instant::now();
    let hb = tokio::spawn(b.clone().run(shutdown.clone()));
    let sw = tokio::spawn(sweeper.run(shutdown.clone()));
    let row = wait_for(
        "the subtask to be re-run by worker B",
        Duration::from_secs(10),
        || async {
            let s = store::subtask::get(&db.pool, sub_id)
                .await
                .unwrap()
                .unwrap();
            (s.status == S::Successful).then_some(s)
        },
    )
    .await;
    let recovered_in = t0.elapsed();
    println!(
        "re-run finished {recovered_in:?} after the worker died (dead_after {:?})",
        cfg.dead_after
    );
    assert_eq!(row.run_time, 2);
    assert_eq!(row.operation, SOp::Retry);
    let logs = store::log::lines(&db.pool, sub_id, Some(2)).await.unwrap();
    assert!(
        logs[0].1.contains(&b_id),
        "run 2 opened by worker B: {logs:?}"
    );
    let before = store::subtask::get(&db.pool, sub_id)
        .await
        .unwrap()
        .unwrap();

    // A finishes late: its result is fenced out.
    let applied = a.finish_started(started).await.unwrap();
    assert_eq!(applied, vec![false]);
    let after = store::subtask::get(&db.pool, sub_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.status, S::Successful);
    assert_eq!(after.run_time, before.run_time);
    assert_eq!(after.finish_time, before.finish_time);
    assert_eq!(task_status(&db, id).await.0, TaskStatus::Successful);
    shutdown.cancel();
    hb.await.unwrap().unwrap();
    sw.await.unwrap();
}

#[tokio::test]
async fn dead_worker_without_retries_left_fails_its_subtask_with_a_reason() {
    let db = TestDb::new().await;
    let id = submit(&db, vec![NodeSpec::new("hang", "test.hang", 30)]).await;
    let a = worker(&db);
    a.register().await.unwrap();
    let started = a.start().await.unwrap();
    sqlx::query("update worker set heartbeat_at = now() - interval '1 hour' where id = $1")
        .bind(a.id())
        .execute(&db.pool)
        .await
        .unwrap();
    let sweeper = engine::Sweeper::new(db.pool.clone(), fast_cfg());
    // A stale heartbeat is no verdict (every heartbeat is stale after an
    // outage): the sweeper declares the worker dead once it has itself
    // watched the heartbeat not advance for dead_after.
    assert_eq!(sweeper.run_once().await.unwrap(), 0);
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let recovered = loop {
        let n = sweeper.run_once().await.unwrap();
        if n > 0 || std::time::Instant::now() > end {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(recovered, 1);
    assert_eq!(
        sweeper.run_once().await.unwrap(),
        0,
        "a second sweep finds nothing"
    );
    let s = store::subtask::get(&db.pool, started.ids[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.status, S::Failed);
    assert!(s.error.unwrap().contains("executor node restarted"));
    assert_eq!(task_status(&db, id).await.0, TaskStatus::Failed);
    // The worker then notices it was declared dead and stops its work.
    assert!(!a.heartbeat().await.unwrap());
    assert_eq!(a.finish_started(started).await.unwrap(), vec![false]);
}

#[tokio::test]
async fn automatic_retry_keeps_a_log_per_run_time() {
    let db = TestDb::new().await;
    let id = submit(
        &db,
        vec![NodeSpec::new("flaky", "test.fail?times=2", 10).retries(2)],
    )
    .await;
    let w = worker(&db);
    wait_for("flaky to succeed", Duration::from_secs(10), || async {
        w.drain().await.unwrap();
        let (st, _) = task_status(&db, id).await;
        (st != TaskStatus::Running).then_some(())
    })
    .await;
    assert_eq!(task_status(&db, id).await.0, TaskStatus::Successful);
    let s = &subtasks(&db, id).await["flaky"];
    assert_eq!(s.run_time, 3);
    let logs = store::log::lines(&db.pool, s.id, None).await.unwrap();
    for rt in 1..=3 {
        let first = logs
            .iter()
            .find(|(r, _)| *r == rt)
            .expect("a log for every run");
        assert!(
            first.1.starts_with("===================="),
            "separator opens run {rt}: {}",
            first.1
        );
        assert!(first.1.contains(if rt == 1 { "EXECUTE" } else { "RETRY" }));
    }
}

#[tokio::test]
async fn task_retry_reruns_failed_subtasks_and_refuses_other_states() {
    let db = TestDb::new().await;
    let id = submit(
        &db,
        vec![
            NodeSpec::new("a", "test.noop", 10),
            NodeSpec::new("f", "test.fail?times=1", 10).after(&["a"]),
            NodeSpec::new("z", "test.noop", 10).after(&["f"]),
        ],
    )
    .await;
    // RUNNING: retry and rollback are refused and change nothing.
    let before = subtasks(&db, id).await;
    assert!(matches!(
        engine::retry_task(&db.pool, id).await,
        Err(engine::Error::Refused(_))
    ));
    assert!(matches!(
        engine::rollback_task(&db.pool, id).await,
        Err(engine::Error::Refused(_))
    ));
    let after = subtasks(&db, id).await;
    for (k, v) in &before {
        assert_eq!(
            (v.status, v.operation, v.run_time),
            (after[k].status, after[k].operation, after[k].run_time)
        );
    }
    assert_eq!(
        task_status(&db, id).await,
        (TaskStatus::Running, TaskOperation::Execute)
    );

    let w = worker(&db);
    w.drain().await.unwrap();
    assert_eq!(task_status(&db, id).await.0, TaskStatus::Failed);
    let subs = subtasks(&db, id).await;
    assert_eq!(subs["f"].status, S::Failed);
    assert_eq!(subs["z"].status, S::Pending);

    engine::retry_task(&db.pool, id).await.unwrap();
    assert_eq!(
        task_status(&db, id).await,
        (TaskStatus::Running, TaskOperation::Retry)
    );
    let f = &subtasks(&db, id).await["f"];
    assert_eq!(
        (f.status, f.operation, f.run_time),
        (S::Ready, SOp::Retry, 2)
    );
    w.drain().await.unwrap();
    assert_eq!(task_status(&db, id).await.0, TaskStatus::Successful);
    assert!(matches!(
        engine::retry_task(&db.pool, id).await,
        Err(engine::Error::Refused(_))
    ));
    assert!(matches!(
        engine::retry_task(&db.pool, TaskId(999_999)).await,
        Err(engine::Error::TaskNotFound(_))
    ));
}

#[tokio::test]
async fn rollback_undoes_in_reverse_topological_order() {
    let db = TestDb::new().await;
    let id = submit(
        &db,
        vec![
            NodeSpec::new("a", "test.noop", 10),
            NodeSpec::new("b", "test.fail?times=0", 10).after(&["a"]),
            NodeSpec::new("c", "test.noop", 10).after(&["a"]),
            NodeSpec::new("d", "test.fail", 10).after(&["b", "c"]),
            NodeSpec::new("e", "test.noop", 10).after(&["d"]),
        ],
    )
    .await;
    let w = worker(&db);
    w.drain().await.unwrap();
    assert_eq!(task_status(&db, id).await.0, TaskStatus::Failed);
    engine::rollback_task(&db.pool, id).await.unwrap();
    assert_eq!(
        task_status(&db, id).await,
        (TaskStatus::Running, TaskOperation::Rollback)
    );
    let subs = subtasks(&db, id).await;
    assert_eq!(
        subs["d"].status,
        S::Ready,
        "the failed leaf rolls back first"
    );
    assert_eq!(subs["d"].operation, SOp::Rollback);
    assert_eq!(subs["a"].status, S::Successful, "a waits for b and c");
    assert_eq!(subs["e"].status, S::Pending, "e never ran");
    // Subtask retry is refused while rolling back.
    assert!(matches!(
        engine::retry_subtask(&db.pool, id, SubtaskId(subs["d"].id)).await,
        Err(engine::Error::Refused(_))
    ));
    w.drain().await.unwrap();
    assert_eq!(
        task_status(&db, id).await,
        (TaskStatus::Successful, TaskOperation::Rollback)
    );
    let subs = subtasks(&db, id).await;
    for n in ["a", "b", "c", "d", "e"] {
        assert_eq!(subs[n].status, S::Pending, "{n}");
    }
    // Each node rolled back only after all its downstreams.
    let rolled = |n: &str| subs[n].finish_time.unwrap();
    assert!(rolled("b") >= rolled("d") && rolled("c") >= rolled("d"));
    assert!(rolled("a") >= rolled("b") && rolled("a") >= rolled("c"));
    assert_eq!(subs["e"].operation, SOp::Execute);
    assert!(matches!(
        engine::rollback_task(&db.pool, id).await,
        Err(engine::Error::Refused(_))
    ));
}

#[tokio::test]
async fn rollback_is_refused_when_prohibited() {
    let db = TestDb::new().await;
    let mut t = new_task("prohibited by context");
    t.context.set("prohibit_rollback", "true");
    let id = submit_with(&db, t, vec![NodeSpec::new("f", "test.fail", 10)]).await;
    let mut prohibiting = NodeSpec::new("p", "test.noop", 10);
    prohibiting.prohibit_rollback = true;
    let id2 = submit(
        &db,
        vec![
            prohibiting,
            NodeSpec::new("f", "test.fail", 10).after(&["p"]),
        ],
    )
    .await;
    worker(&db).drain().await.unwrap();
    for id in [id, id2] {
        assert_eq!(task_status(&db, id).await.0, TaskStatus::Failed);
        assert!(matches!(
            engine::rollback_task(&db.pool, id).await,
            Err(engine::Error::Refused(
                taskd::model::transitions::Refusal::ProhibitRollback
            ))
        ));
        assert_eq!(
            task_status(&db, id).await,
            (TaskStatus::Failed, TaskOperation::Execute)
        );
    }
}

#[tokio::test]
async fn failed_rollback_can_be_skipped_and_the_rollback_completes() {
    let db = TestDb::new().await;
    let id = submit(
        &db,
        vec![
            NodeSpec::new("a", "test.noop", 10),
            NodeSpec::new("b", "test.fail?times=0&rollback=fail", 10).after(&["a"]),
            NodeSpec::new("c", "test.fail", 10).after(&["b"]),
        ],
    )
    .await;
    let w = worker(&db);
    w.drain().await.unwrap();
    engine::rollback_task(&db.pool, id).await.unwrap();
    w.drain().await.unwrap();
    assert_eq!(
        task_status(&db, id).await,
        (TaskStatus::Failed, TaskOperation::Rollback)
    );
    let subs = subtasks(&db, id).await;
    assert_eq!(subs["c"].status, S::Pending);
    assert_eq!(subs["b"].status, S::Failed);
    assert_eq!(subs["a"].status, S::Successful);
    assert!(matches!(
        engine::retry_task(&db.pool, id).await,
        Err(engine::Error::Refused(_))
    ));
    assert!(matches!(
        engine::skip_subtask(&db.pool, id, SubtaskId(subs["a"].id)).await,
        Err(engine::Error::Refused(_))
    ));
    engine::skip_subtask(&db.pool, id, SubtaskId(subs["b"].id))
        .await
        .unwrap();
    let b = &subtasks(&db, id).await["b"];
    assert_eq!((b.status, b.operation), (S::Pending, SOp::RollbackSkip));
    w.drain().await.unwrap();
    assert_eq!(
        task_status(&db, id).await,
        (TaskStatus::Successful, TaskOperation::Rollback)
    );
}

#[tokio::test]
async fn skip_lets_the_task_go_on_and_is_refused_for_other_states() {
    let db = TestDb::new().await;
    let id = submit(
        &db,
        vec![
            NodeSpec::new("f", "test.fail", 10),
            NodeSpec::new("z", "test.noop", 10).after(&["f"]),
        ],
    )
    .await;
    let subs = subtasks(&db, id).await;
    assert!(
        matches!(
            engine::skip_subtask(&db.pool, id, SubtaskId(subs["f"].id)).await,
            Err(engine::Error::Refused(_))
        ),
        "READY cannot be skipped"
    );
    assert!(matches!(
        engine::skip_subtask(&db.pool, TaskId(id.0 + 1000), SubtaskId(subs["f"].id)).await,
        Err(engine::Error::TaskNotFound(_))
    ));
    let w = worker(&db);
    w.drain().await.unwrap();
    assert_eq!(task_status(&db, id).await.0, TaskStatus::Failed);
    engine::skip_subtask(&db.pool, id, SubtaskId(subs["f"].id))
        .await
        .unwrap();
    let f = &subtasks(&db, id).await["f"];
    assert_eq!((f.status, f.operation), (S::Successful, SOp::Skip));
    assert_eq!(task_status(&db, id).await.0, TaskStatus::Running);
    w.drain().await.unwrap();
    assert_eq!(task_status(&db, id).await.0, TaskStatus::Successful);
    assert_eq!(subtasks(&db, id).await["z"].status, S::Successful);
}

#[tokio::test]
async fn subtask_retry_reruns_one_failed_subtask() {
    let db = TestDb::new().await;
    let id = submit(&db, vec![NodeSpec::new("f", "test.fail?times=1", 10)]).await;
    let w = worker(&db);
    w.drain().await.unwrap();
    let f = subtasks(&db, id).await["f"].clone();
    assert_eq!(f.status, S::Failed);
    let row = engine::retry_subtask(&db.pool, id, SubtaskId(f.id))
        .await
        .unwrap();
    assert_eq!(
        (row.status, row.operation, row.run_time),
        (S::Ready, SOp::Retry, 2)
    );
    assert!(
        matches!(
            engine::retry_subtask(&db.pool, id, SubtaskId(f.id)).await,
            Err(engine::Error::Refused(_))
        ),
        "a READY subtask cannot be retried"
    );
    w.drain().await.unwrap();
    assert_eq!(task_status(&db, id).await.0, TaskStatus::Successful);
}

#[tokio::test]
async fn cancel_reaches_the_running_worker_which_stops_the_action() {
    let db = TestDb::new().await;
    let id = submit(
        &db,
        vec![
            NodeSpec::new("hang", "test.hang", 600),
            NodeSpec::new("after", "test.noop", 10).after(&["hang"]),
        ],
    )
    .await;
    let subs = subtasks(&db, id).await;
    assert!(
        matches!(
            engine::cancel_subtask(&db.pool, id, SubtaskId(subs["after"].id)).await,
            Err(engine::Error::Refused(_))
        ),
        "PENDING cannot be cancelled"
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let w = worker(&db);
    let handle = tokio::spawn(w.clone().run(shutdown.clone()));
    let hang_id = subs["hang"].id;
    wait_for("hang to run", Duration::from_secs(10), || async {
        let s = store::subtask::get(&db.pool, hang_id)
            .await
            .unwrap()
            .unwrap();
        (s.status == S::Running).then_some(())
    })
    .await;
    engine::cancel_subtask(&db.pool, id, SubtaskId(hang_id))
        .await
        .unwrap();
    let s = wait_for("the cancel to land", Duration::from_secs(10), || async {
        let s = store::subtask::get(&db.pool, hang_id)
            .await
            .unwrap()
            .unwrap();
        (s.status == S::Failed).then_some(s)
    })
    .await;
    assert_eq!(s.operation, SOp::Cancel);
    assert_eq!(s.run_time, 1, "a cancelled run is not retried");
    assert_eq!(s.error.as_deref(), Some("subtask canceled"));
    assert_eq!(task_status(&db, id).await.0, TaskStatus::Failed);
    assert!(matches!(
        engine::cancel_subtask(&db.pool, id, SubtaskId(hang_id)).await,
        Err(engine::Error::Refused(_))
    ));
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn timeout_stops_the_action_and_fails_the_subtask() {
    let db = TestDb::new().await;
    let id = submit(&db, vec![NodeSpec::new("stall", "test.hang", 1)]).await;
    worker(&db).drain().await.unwrap();
    let s = &subtasks(&db, id).await["stall"];
    assert_eq!(s.status, S::Failed);
    assert!(
        s.error.as_deref().unwrap().contains("timed out"),
        "{:?}",
        s.error
    );
    assert_eq!(task_status(&db, id).await.0, TaskStatus::Failed);
}

#[tokio::test]
async fn sweeper_fails_a_run_past_its_timeout_when_its_worker_did_not() {
    let db = TestDb::new().await;
    let id = submit(&db, vec![NodeSpec::new("stall", "test.hang", 1)]).await;
    let w = worker(&db);
    w.register().await.unwrap();
    let started = w.start().await.unwrap();
    // Pretend the run's lease ran out long ago while its worker stays alive.
    sqlx::query("update subtask_instance set lease_expires_at = now() - interval '1 minute'")
        .execute(&db.pool)
        .await
        .unwrap();
    let sweeper = engine::Sweeper::new(db.pool.clone(), fast_cfg());
    assert_eq!(sweeper.run_once().await.unwrap(), 1);
    let s = &subtasks(&db, id).await["stall"];
    assert_eq!(s.status, S::Failed);
    assert!(s.error.as_deref().unwrap().contains("timed out"));
    // The worker's own timeout then ends the run; its write is fenced out.
    assert_eq!(w.finish_started(started).await.unwrap(), vec![false]);
}

#[tokio::test]
async fn context_flows_downstream_merging_and_refusing_conflicts() {
    let db = TestDb::new().await;
    let mut t = new_task("context");
    t.context.set("cluster", "c1");
    t.context.list_map.insert("ids".into(), vec!["1".into()]);
    let id = submit_with(
        &db,
        t,
        vec![
            NodeSpec::new("a", "test.set?key=from_a&value=1", 10),
            NodeSpec::new("b", "test.set?key=from_b&value=2", 10).after(&["a"]),
            NodeSpec::new("c", "test.set?key=from_c&value=3", 10).after(&["a"]),
            NodeSpec::new("d", "test.noop", 10).after(&["b", "c"]),
        ],
    )
    .await;
    worker(&db).drain().await.unwrap();
    assert_eq!(task_status(&db, id).await.0, TaskStatus::Successful);
    let d = subtasks(&db, id).await["d"].context.clone().unwrap().0;
    for (k, v) in [
        ("cluster", "c1"),
        ("from_a", "1"),
        ("from_b", "2"),
        ("from_c", "3"),
    ] {
        assert_eq!(d.get(k), Some(v), "{k}");
    }
    assert_eq!(d.list("ids"), ["1"]);

    let id = submit(
        &db,
        vec![
            NodeSpec::new("a", "test.noop", 10),
            NodeSpec::new("b", "test.set?key=k&value=left", 10).after(&["a"]),
            NodeSpec::new("c", "test.set?key=k&value=right", 10).after(&["a"]),
            NodeSpec::new("d", "test.noop", 10).after(&["b", "c"]),
        ],
    )
    .await;
    worker(&db).drain().await.unwrap();
    assert_eq!(task_status(&db, id).await.0, TaskStatus::Failed);
    let d = &subtasks(&db, id).await["d"];
    assert_eq!(d.status, S::Failed);
    assert!(
        d.error.as_deref().unwrap().contains("context conflict"),
        "{:?}",
        d.error
    );
    assert!(d.start_time.is_none(), "a conflicting node never runs");
}

#[tokio::test]
async fn a_node_split_over_a_list_runs_as_parallel_copies() {
    let db = TestDb::new().await;
    let mut t = new_task("split");
    t.context.list_map.insert(
        "server_ids".into(),
        vec!["7".into(), "8".into(), "9".into()],
    );
    let id = submit_with(
        &db,
        t,
        vec![
            NodeSpec::new("prepare", "test.noop", 10),
            NodeSpec::new("each", "test.noop", 10)
                .after(&["prepare"])
                .split_on("server_ids"),
            NodeSpec::new("finish", "test.noop", 10).after(&["each"]),
        ],
    )
    .await;
    let w = worker(&db);
    assert_eq!(w.run_once().await.unwrap(), 1);
    let rows = store::subtask::list_for_task(&db.pool, id).await.unwrap();
    let copies: Vec<&SubtaskRow> = rows.iter().filter(|s| s.name == "each").collect();
    assert_eq!(copies.len(), 3);
    for (i, c) in copies.iter().enumerate() {
        assert_eq!(c.status, S::Ready);
        assert_eq!(c.parallel_idx, i as i32);
        let ctx = &c.context.as_ref().unwrap().0;
        assert!(ctx.parallel);
        assert_eq!(ctx.parallel_idx, i as i32);
    }
    assert_eq!(w.run_once().await.unwrap(), 3, "the copies run in parallel");
    w.drain().await.unwrap();
    assert_eq!(task_status(&db, id).await.0, TaskStatus::Successful);
    let finish = rows.iter().find(|s| s.name == "finish").unwrap();
    let edges = store::subtask::edges_for_tasks(&db.pool, &[id.0])
        .await
        .unwrap();
    assert_eq!(edges.iter().filter(|(_, d)| *d == finish.id).count(), 3);
}

#[tokio::test]
async fn per_task_concurrency_limit_bounds_ready_and_running_subtasks() {
    let db = TestDb::new().await;
    let mut t = new_task("wide");
    t.max_concurrency = 4;
    let nodes = (0..10)
        .map(|i| NodeSpec::new(&format!("n{i}"), "test.noop", 10))
        .collect();
    let id = submit_with(&db, t, nodes).await;
    let ready = subtasks(&db, id)
        .await
        .values()
        .filter(|s| s.status == S::Ready)
        .count();
    assert_eq!(ready, 4);
    let w = worker(&db);
    assert_eq!(w.run_once().await.unwrap(), 4);
    assert_eq!(w.run_once().await.unwrap(), 4);
    assert_eq!(w.run_once().await.unwrap(), 2);
    assert_eq!(task_status(&db, id).await.0, TaskStatus::Successful);
}

#[tokio::test]
async fn invalid_dags_are_refused_before_anything_is_written() {
    let db = TestDb::new().await;
    let bad: Vec<Vec<NodeSpec>> = vec![
        vec![],
        vec![
            NodeSpec::new("a", "test.noop", 10).after(&["b"]),
            NodeSpec::new("b", "test.noop", 10).after(&["a"]),
        ],
        vec![NodeSpec::new("a", "test.noop", 10).after(&["ghost"])],
        vec![
            NodeSpec::new("a", "test.noop", 10),
            NodeSpec::new("a", "test.noop", 10),
        ],
    ];
    for nodes in bad {
        let spec = DagSpec {
            nodes,
            context: Context::default(),
        };
        let r = engine::submit(&db.pool, &new_task("bad"), &spec).await;
        assert!(matches!(r, Err(engine::Error::Dag(_))), "{r:?}");
    }
    let n: i64 = sqlx::query_scalar("select count(*) from task_instance")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn shutdown_hands_back_runs_that_outlast_the_grace_period() {
    let db = TestDb::new().await;
    let id = submit(&db, vec![NodeSpec::new("hang", "test.hang", 600)]).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let w = worker(&db);
    let wid = w.id().to_string();
    let handle = tokio::spawn(w.run(shutdown.clone()));
    let hang = subtasks(&db, id).await["hang"].id;
    wait_for("hang to run", Duration::from_secs(10), || async {
        let s = store::subtask::get(&db.pool, hang).await.unwrap().unwrap();
        (s.status == S::Running).then_some(())
    })
    .await;
    shutdown.cancel();
    handle.await.unwrap().unwrap();
    let s = store::subtask::get(&db.pool, hang).await.unwrap().unwrap();
    assert_eq!(
        (s.status, s.run_time),
        (S::Ready, 1),
        "handed back, ready for another worker at once"
    );
    assert!(s.executor.is_none());
    let rows: i64 = sqlx::query_scalar("select count(*) from worker where id = $1")
        .bind(&wid)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "a clean shutdown removes the worker row");
    // Another worker takes it at once.
    let other = worker(&db);
    let started = other.start().await.unwrap();
    assert_eq!(started.ids, vec![hang]);
}

#[tokio::test]
async fn two_migration_runs_started_together_both_succeed() {
    let db = TestDb::new().await;
    // A second, empty database, migrated twice at the same moment.
    let name = format!("{}_m", db.name);
    sqlx::query(&format!("create database {name}"))
        .execute(&db.pool)
        .await
        .unwrap();
    let url = db.url.replace(&db.name, &name);
    let (a, b) = tokio::join!(taskd::db::migrate(&url), taskd::db::migrate(&url));
    a.unwrap();
    b.unwrap();
    let pool = taskd::db::connect(&url, 2).await.unwrap();
    assert!(taskd::db::migrations_applied(&pool).await.unwrap());
    pool.close().await;
    sqlx::query(&format!("drop database {name} with (force)"))
        .execute(&db.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_claim_uses_the_partial_index_on_ready_rows() {
    let db = TestDb::new().await;
    // History: many finished rows, a few ready ones.
    let id = submit(&db, vec![NodeSpec::new("only", "test.noop", 10)]).await;
    sqlx::query(
        "insert into subtask_instance (task_id, series_id, name, description, class_name, status, \
             operation, timeout_s, pending_upstreams, finish_time) \
         select $1, g, 'old', 'old', 'test.noop', 'SUCCESSFUL', 'EXECUTE', 10, 0, now() \
         from generate_series(1, 20000) g",
    )
    .bind(id.0)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("analyze subtask_instance")
        .execute(&db.pool)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "explain select id from subtask_instance \
         where status = 'READY' and run_after <= now() order by run_after limit 32 \
         for update skip locked",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let plan = plan.join("\n");
    println!("{plan}");
    assert!(plan.contains("subtask_instance_ready_idx"), "{plan}");
}

fn succeeded(
    c: &store::subtask::Claimed,
    executor: &str,
    ctx: Option<Context>,
) -> engine::Finished {
    engine::Finished {
        run: store::subtask::RunKey {
            id: c.id,
            run_time: c.run_time,
            executor: executor.into(),
        },
        task_id: c.task_id,
        operation: c.operation,
        retry_limit: c.retry_limit,
        class_name: c.class_name.clone(),
        outcome: engine::Outcome::Succeeded(ctx),
    }
}

#[tokio::test]
async fn the_finishing_worker_starts_successors_itself_within_the_concurrency_limit() {
    let db = TestDb::new().await;
    let mut t = new_task("direct");
    t.max_concurrency = 2;
    t.context.set("cluster", "c1");
    t.context
        .list_map
        .insert("ids".into(), vec!["1".into(), "1".into(), "2".into()]);
    let id = submit_with(
        &db,
        t,
        vec![
            NodeSpec::new("a", "test.noop", 10),
            NodeSpec::new("b", "test.noop", 10).after(&["a"]),
            NodeSpec::new("c", "test.noop", 10).after(&["a"]),
            NodeSpec::new("d", "test.noop", 10).after(&["a"]),
            NodeSpec::new("e", "test.noop", 10).after(&["b"]),
        ],
    )
    .await;
    let cfg = fast_cfg();
    let claimed = store::subtask::claim(&db.pool, "w1", 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let mut out = claimed[0].context.0.clone();
    out.set("from_a", "1");
    let a_done = succeeded(&claimed[0], "w1", Some(out));

    let (applied, started) =
        engine::finish_and_start(&db.pool, &cfg, std::slice::from_ref(&a_done), "w1", 10)
            .await
            .unwrap();
    assert_eq!(applied, vec![true]);
    // Two slots: b and c start on w1 at once, in series order; d waits.
    let names: Vec<&str> = started.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["b", "c"]);
    let subs = subtasks(&db, id).await;
    for n in ["b", "c"] {
        let s = &subs[n];
        assert_eq!(s.status, S::Running, "{n}");
        assert_eq!(s.executor.as_deref(), Some("w1"), "{n}");
        assert_eq!(s.start_time, s.run_after, "{n} never waited READY");
        let ctx = s.context.clone().unwrap().0;
        assert_eq!(ctx.get("from_a"), Some("1"), "{n}");
        assert_eq!(ctx.get("cluster"), Some("c1"), "{n}");
        assert_eq!(
            ctx.list("ids"),
            ["1", "2"],
            "{n}: one upstream's context, deduplicated"
        );
        assert_eq!(ctx.parallel_idx, -1);
        let logs = store::log::lines(&db.pool, s.id, Some(1)).await.unwrap();
        assert!(logs[0].1.contains("on w1"), "{n}: {logs:?}");
    }
    assert_eq!(subs["d"].status, S::Pending);
    assert_eq!(started[0].context.0, subs["b"].context.clone().unwrap().0);

    // The same result again is fenced out and starts nothing.
    let (applied, again) = engine::finish_and_start(&db.pool, &cfg, &[a_done], "w1", 10)
        .await
        .unwrap();
    assert_eq!((applied, again.len()), (vec![false], 0));

    // b's end frees one slot: d (waiting since a) comes before e in series
    // order, and with no slot to start into it goes READY for any worker.
    let b = started.iter().find(|c| c.name == "b").unwrap();
    let (applied, none) =
        engine::finish_and_start(&db.pool, &cfg, &[succeeded(b, "w1", None)], "w1", 0)
            .await
            .unwrap();
    assert_eq!((applied, none.len()), (vec![true], 0));
    let subs = subtasks(&db, id).await;
    assert_eq!(subs["d"].status, S::Ready);
    assert_eq!(subs["e"].status, S::Pending);
    assert_eq!(subs["e"].pending_upstreams, 0);
    assert_eq!(subs["c"].status, S::Running);

    let c = started.iter().find(|c| c.name == "c").unwrap();
    engine::finish_batch(&db.pool, &cfg, &[succeeded(c, "w1", None)])
        .await
        .unwrap();
    worker(&db).drain().await.unwrap();
    assert_eq!(task_status(&db, id).await.0, TaskStatus::Successful);
    assert_eq!(
        subtasks(&db, id).await["e"]
            .context
            .clone()
            .unwrap()
            .0
            .get("from_a"),
        Some("1")
    );
}

#[tokio::test]
async fn a_running_worker_runs_a_chain_without_claiming_each_step() {
    let db = TestDb::new().await;
    let nodes: Vec<NodeSpec> = (0..6)
        .map(|i| {
            let n = NodeSpec::new(&format!("s{i}"), "test.noop", 10);
            if i == 0 {
                n
            } else {
                n.after(&[&format!("s{}", i - 1)])
            }
        })
        .collect();
    let id = submit(&db, nodes).await;
    let w = worker(&db);
    let w_id = w.id().to_string();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(w.run(shutdown.clone()));
    wait_for("the chain to finish", Duration::from_secs(10), || async {
        (task_status(&db, id).await.0 == TaskStatus::Successful).then_some(())
    })
    .await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    let subs = subtasks(&db, id).await;
    for i in 1..6 {
        let s = &subs[&format!("s{i}")];
        assert_eq!(s.status, S::Successful);
        assert_eq!(
            s.start_time, s.run_after,
            "s{i} was started by the finisher"
        );
        let logs = store::log::lines(&db.pool, s.id, Some(1)).await.unwrap();
        assert!(logs[0].1.contains(&w_id), "s{i}: {logs:?}");
        let up = &subs[&format!("s{}", i - 1)];
        assert!(s.start_time.unwrap() >= up.finish_time.unwrap());
    }
}

#[tokio::test]
async fn a_submit_inserts_everything_at_once_and_notifies_the_workers() {
    let db = TestDb::new().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&db.pool)
        .await
        .unwrap();
    listener.listen(store::READY_CHANNEL).await.unwrap();
    // Submits notify while a worker is idle (see wakeups.rs): one is.
    store::worker::register(&db.pool, "idle-worker", "test", 1, 4)
        .await
        .unwrap();
    store::worker::mark_idle(&db.pool, "idle-worker", true)
        .await
        .unwrap();
    let id = submit(
        &db,
        vec![
            NodeSpec::new("a", "test.noop", 10),
            NodeSpec::new("b", "test.noop", 10),
            NodeSpec::new("c", "test.noop", 10).after(&["a", "b"]),
        ],
    )
    .await;
    let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a notification within 10 s")
        .unwrap();
    assert_eq!(n.channel(), store::READY_CHANNEL);
    let subs = subtasks(&db, id).await;
    assert_eq!(subs["a"].status, S::Ready);
    assert_eq!(subs["b"].status, S::Ready);
    assert_eq!(subs["c"].status, S::Pending);
    assert_eq!(subs["c"].pending_upstreams, 2);
    let ups: Vec<i64> = sqlx::query_scalar(
        "select upstream_id from subtask_edge where downstream_id = $1 order by upstream_id",
    )
    .bind(subs["c"].id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(ups, vec![subs["a"].id, subs["b"].id]);
}
