//! Wake-ups: a commit that makes subtasks READY notifies only while some
//! worker is idle, and an idle worker is woken by it long before its poll.

use crate::support::engine::{fast_cfg, submit};
use crate::support::{wait_for, TestDb};
use sqlx::postgres::PgListener;
use std::time::Duration;
use taskd::actions::Registry;
use taskd::dag::NodeSpec;
use taskd::engine::Worker;
use taskd::model::TaskStatus;
use taskd::store;
use tokio_util::sync::CancellationToken;

/// The payload of the next notification on the READY channel.
async fn next_payload(l: &mut PgListener) -> String {
    tokio::time::timeout(Duration::from_secs(10), l.recv())
        .await
        .expect("a notification within 10 s")
        .unwrap()
        .payload()
        .to_string()
}

/// Sends a notification of our own: notifications arrive in commit order,
/// so whatever arrives before it was sent before it.
async fn marker(db: &TestDb) {
    sqlx::query("select pg_notify($1, 'marker')")
        .bind(store::READY_CHANNEL)
        .execute(&db.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn submits_notify_only_while_a_worker_is_idle() {
    let db = TestDb::new().await;
    store::worker::register(&db.pool, "busy-worker", "test", 1, 4)
        .await
        .unwrap();
    let mut l = PgListener::connect_with(&db.pool).await.unwrap();
    l.listen(store::READY_CHANNEL).await.unwrap();
    let nodes = || vec![NodeSpec::new("a", "test.noop", 10)];
    submit(&db, nodes()).await;
    marker(&db).await;
    assert_eq!(
        next_payload(&mut l).await,
        "marker",
        "no worker is idle: the submit must not notify"
    );
    store::worker::mark_idle(&db.pool, "busy-worker", true)
        .await
        .unwrap();
    submit(&db, nodes()).await;
    marker(&db).await;
    assert_eq!(next_payload(&mut l).await, "", "an idle worker is notified");
    assert_eq!(next_payload(&mut l).await, "marker");
    store::worker::mark_idle(&db.pool, "busy-worker", false)
        .await
        .unwrap();
    submit(&db, nodes()).await;
    marker(&db).await;
    assert_eq!(next_payload(&mut l).await, "marker", "busy again");
}

#[tokio::test]
async fn an_idle_worker_is_woken_long_before_its_poll() {
    let db = TestDb::new().await;
    let cfg = taskd::engine::EngineConfig {
        poll_interval: Duration::from_secs(120),
        ..fast_cfg()
    };
    let w = Worker::new(db.pool.clone(), Registry::standard(), cfg);
    let id = w.id().to_string();
    let stop = CancellationToken::new();
    let run = tokio::spawn(w.run(stop.clone()));
    wait_for(
        "the worker to mark itself idle",
        Duration::from_secs(10),
        || {
            let (db, id) = (&db, &id);
            async move {
                let idle: Option<bool> =
                    sqlx::query_scalar("select idle from worker where id = $1")
                        .bind(id)
                        .fetch_optional(&db.pool)
                        .await
                        .unwrap();
                (idle == Some(true)).then_some(())
            }
        },
    )
    .await;
    let task = submit(
        &db,
        vec![
            NodeSpec::new("a", "test.noop", 10),
            NodeSpec::new("b", "test.noop", 10),
        ],
    )
    .await;
    // Far less than the 120 s poll: the notification woke it.
    wait_for("the task to succeed", Duration::from_secs(20), || {
        let db = &db;
        async move {
            let t = store::task::get(&db.pool, task).await.unwrap().unwrap();
            (t.status == TaskStatus::Successful).then_some(())
        }
    })
    .await;
    stop.cancel();
    run.await.unwrap().unwrap();
}
