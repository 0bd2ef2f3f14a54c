//! Faults around the engine: connections terminated by PostgreSQL in the
//! middle of a run, processes killed, concurrent requests.

use crate::support::engine::{fast_cfg, new_task, submit_with};
use crate::support::{admin_url, wait_for, TestDb};
use std::time::Duration;
use taskd::actions::Registry;
use taskd::dag::NodeSpec;
use taskd::engine::{Sweeper, Worker};
use tokio_util::sync::CancellationToken;

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

#[tokio::test]
async fn terminated_connections_are_survived_and_nothing_is_lost() {
    let db = TestDb::new().await;
    for i in 0..150 {
        submit_with(
            &db,
            new_task(&format!("t{i}")),
            vec![
                NodeSpec::new("a", "test.sleep?ms=30", 30).retries(3),
                NodeSpec::new("b", "test.sleep?ms=30", 30)
                    .after(&["a"])
                    .retries(3),
                NodeSpec::new("c", "test.noop", 30).after(&["b"]).retries(3),
            ],
        )
        .await;
    }
    let shutdown = CancellationToken::new();
    let mut handles = Vec::new();
    for _ in 0..2 {
        // Each worker has its own pool, as separate processes would.
        let pool = taskd::db::connect(&db.url, 8).await.unwrap();
        let w = Worker::new(pool.clone(), Registry::standard(), fast_cfg());
        handles.push(tokio::spawn(w.run(shutdown.clone())));
        let s = Sweeper::new(pool, fast_cfg());
        let sd = shutdown.clone();
        handles.push(tokio::spawn(async move {
            s.run(sd).await;
            Ok(())
        }));
    }
    wait_for("some progress", Duration::from_secs(20), || async {
        (count(
            &db,
            "select count(*) from subtask_instance where status = 'SUCCESSFUL'",
        )
        .await
            > 20)
            .then_some(())
    })
    .await;
    assert!(
        count(
            &db,
            "select count(*) from task_instance where status = 'RUNNING'"
        )
        .await
            > 0,
        "the faults land in the middle of the run"
    );
    // Kill every connection to this database, three times in a row, each
    // time once the workers have connected again.
    let admin = sqlx::PgPool::connect(&admin_url()).await.unwrap();
    for _ in 0..3 {
        let (killed, at): (Vec<bool>, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
            "select coalesce(array_agg(pg_terminate_backend(pid)), '{}'), clock_timestamp() \
             from pg_stat_activity \
             where datname = $1 and pid <> pg_backend_pid()",
        )
        .bind(&db.name)
        .fetch_one(&admin)
        .await
        .unwrap();
        assert!(!killed.is_empty());
        wait_for(
            "the workers to reconnect",
            Duration::from_secs(20),
            || async {
                let fresh: i64 = sqlx::query_scalar(
                    "select count(*) from pg_stat_activity \
                 where datname = $1 and backend_start > $2",
                )
                .bind(&db.name)
                .bind(at)
                .fetch_one(&admin)
                .await
                .ok()?;
                (fresh > 0).then_some(())
            },
        )
        .await;
    }
    admin.close().await;
    wait_for("every task to settle", Duration::from_secs(60), || async {
        let running = sqlx::query_scalar::<_, i64>(
            "select count(*) from task_instance where status = 'RUNNING'",
        )
        .fetch_one(&db.pool)
        .await
        .ok()?;
        (running == 0).then_some(())
    })
    .await;
    assert_eq!(
        count(
            &db,
            "select count(*) from task_instance where status = 'SUCCESSFUL'"
        )
        .await,
        150
    );
    shutdown.cancel();
    for h in handles {
        h.await.unwrap().unwrap();
    }
}
