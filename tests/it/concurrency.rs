//! The per-task concurrency limit: at no time are more of a task's
//! subtasks READY, RUNNING or CANCELING than its `max_concurrency`, whether
//! they execute, are retried by the user or roll back.

use crate::support::engine::{assert_active_counts_exact, new_task, submit_with, worker};
use crate::support::TestDb;
use taskd::dag::NodeSpec;
use taskd::engine::{self, Worker};
use taskd::model::{SubtaskStatus as S, TaskId, TaskOperation, TaskStatus};
use taskd::store;

const LIMIT: i64 = 5;
const COPIES: usize = 50;

/// A root, `COPIES` parallel copies of `copy`, a join running `join`.
async fn wide_task(db: &TestDb, copy: &str, join: &str) -> TaskId {
    let mut t = new_task("wide");
    t.max_concurrency = LIMIT as i32;
    t.context
        .list_map
        .insert("ids".into(), (0..COPIES).map(|i| i.to_string()).collect());
    submit_with(
        db,
        t,
        vec![
            NodeSpec::new("root", "test.noop", 10),
            NodeSpec::new("copy", copy, 10)
                .after(&["root"])
                .split_on("ids"),
            NodeSpec::new("join", join, 10).after(&["copy"]),
        ],
    )
    .await
}

/// The task's subtasks READY, RUNNING or CANCELING now.
async fn active(db: &TestDb, id: TaskId) -> i64 {
    store::subtask::list_for_task(&db.pool, id)
        .await
        .unwrap()
        .iter()
        .filter(|s| matches!(s.status, S::Ready | S::Running | S::Canceling))
        .count() as i64
}

/// Runs the task step by step (claim what fits, finish it all) until
/// nothing is claimable, checking the limit before every step; returns the
/// most subtasks seen active at once.
async fn drive(db: &TestDb, w: &Worker, id: TaskId) -> i64 {
    let mut most = 0;
    loop {
        assert_active_counts_exact(db).await;
        let now = active(db, id).await;
        assert!(
            now <= LIMIT,
            "{now} subtasks active with a limit of {LIMIT}"
        );
        most = most.max(now);
        if w.run_once().await.unwrap() == 0 {
            return most;
        }
    }
}

async fn status(db: &TestDb, id: TaskId) -> (TaskStatus, TaskOperation) {
    let t = store::task::get(&db.pool, id).await.unwrap().unwrap();
    (t.status, t.operation)
}

#[tokio::test]
async fn execute_and_rollback_keep_within_the_concurrency_limit() {
    let db = TestDb::new().await;
    let id = wide_task(&db, "test.noop", "test.fail").await;
    let w = worker(&db);
    assert_eq!(drive(&db, &w, id).await, LIMIT, "the copies fill the slots");
    assert_eq!(status(&db, id).await.0, TaskStatus::Failed);
    engine::rollback_task(&db.pool, id).await.unwrap();
    // The failed join rolls back first, then the copies, LIMIT at a time,
    // then the root.
    assert_eq!(drive(&db, &w, id).await, LIMIT);
    assert_eq!(
        status(&db, id).await,
        (TaskStatus::Successful, TaskOperation::Rollback)
    );
    let subs = store::subtask::list_for_task(&db.pool, id).await.unwrap();
    assert!(subs.iter().all(|s| s.status == S::Pending));
    let rolled = |name: &str| {
        subs.iter()
            .filter(|s| s.name == name)
            .map(|s| s.finish_time.unwrap())
            .collect::<Vec<_>>()
    };
    let (join, copies, root) = (rolled("join")[0], rolled("copy"), rolled("root")[0]);
    assert_eq!(copies.len(), COPIES);
    assert!(copies.iter().all(|c| *c >= join && *c <= root));
}

#[tokio::test]
async fn a_retried_task_keeps_within_the_concurrency_limit() {
    let db = TestDb::new().await;
    let id = wide_task(&db, "test.fail?times=1", "test.noop").await;
    let w = worker(&db);
    drive(&db, &w, id).await;
    assert_eq!(status(&db, id).await.0, TaskStatus::Failed);
    engine::retry_task(&db.pool, id).await.unwrap();
    assert_eq!(drive(&db, &w, id).await, LIMIT);
    assert_eq!(
        status(&db, id).await,
        (TaskStatus::Successful, TaskOperation::Retry)
    );
}
