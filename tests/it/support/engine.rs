//! Engine fixtures: a fast configuration, a task to submit, submitting a
//! DAG, a worker with the standard registry.

use super::TestDb;
use std::time::Duration;
use taskd::actions::Registry;
use taskd::dag::{DagSpec, NodeSpec};
use taskd::engine::{self, EngineConfig, Submitted, Worker};
use taskd::model::{Context, TaskId};
use taskd::store::task::NewTask;

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
        ..EngineConfig::default()
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
        holds: Vec::new(),
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

/// Asserts that every task's stored count of active subtasks
/// (`task_instance.active`, kept by trigger) is what counting its rows says.
pub async fn assert_active_counts_exact(db: &TestDb) {
    let rows: Vec<(i64, i32, i64)> = sqlx::query_as(
        "select t.id, t.active, (select count(*) from subtask_instance s \
             where s.task_id = t.id and s.status in ('READY', 'RUNNING', 'CANCELING')) \
         from task_instance t order by t.id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for (id, stored, counted) in rows {
        assert_eq!(i64::from(stored), counted, "active count of task {id}");
    }
}
