//! The engine against a real database: DAG order, claiming, crash recovery,
//! the state machine's user actions, context and migrations.

use crate::support::{wait_for, TestDb};
use std::collections::HashMap;
use std::time::Duration;
use taskd::actions::Registry;
use taskd::dag::{DagSpec, NodeSpec};
use taskd::engine::{self, EngineConfig, Submitted, Worker};
use taskd::model::{Context, SubtaskOperation as SOp, SubtaskStatus as S, TaskId, TaskOperation, TaskStatus};
use taskd::store::{self, subtask::SubtaskRow, task::NewTask};

pub fn fast_cfg() -> EngineConfig {
    EngineConfig {
        slots: 16,
        poll_interval: Duration::from_millis(50),
        heartbeat_interval: Duration::from_millis(100),
        dead_after: Duration::from_millis(600),
        sweep_interval: Duration::from_millis(100),
        shutdown_grace: Duration::from_millis(500),
        retry_backoff: Duration::from_millis(1),
        retry_backoff_cap: Duration::from_millis(10),
        timeout_grace: Duration::from_millis(200),
        finish_batch: 64,
    }
}

pub fn new_task(name: &str) -> NewTask {
    NewTask {
        name: name.into(),
        task_type: taskd::model::TaskType::Manual,
        creator: "tester".into(),
        executor: None,
        cluster_id: None,
        host_id: None,
        server_id: None,
        target_key: None,
        context: Context::default(),
        prohibit_rollback: false,
        max_concurrency: 10,
        trace_id: "trace-test".into(),
        idempotency_key: None,
    }
}

pub async fn submit(db: &TestDb, nodes: Vec<NodeSpec>) -> TaskId {
    submit_with(db, new_task("test task"), nodes).await
}

pub async fn submit_with(db: &TestDb, task: NewTask, nodes: Vec<NodeSpec>) -> TaskId {
    let spec = DagSpec {
        nodes,
        context: task.context.clone(),
    };
    match engine::submit(&db.pool, &task, &spec).await.unwrap() {
        Submitted::Created(id) => id,
        other => panic!("expected a new task, got {other:?}"),
    }
}

pub fn worker(db: &TestDb) -> Worker {
    Worker::new(db.pool.clone(), Registry::standard(), fast_cfg())
}

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
    let edges = store::subtask::edges_for_tasks(&db.pool, &[id.0]).await.unwrap();
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
