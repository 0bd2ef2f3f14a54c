//! PostgreSQL faults seen by the API: connections terminated under the
//! pool (by PostgreSQL or by a network cut, through `faults::proxy`) are
//! replaced, not handed to requests.

use crate::app::TestApp;
use crate::faults::proxy::Proxy;
use crate::support::{admin_url, wait_for};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);

/// Answers `n` concurrent API requests that each read the database; returns
/// their statuses.
async fn burst(app: &TestApp, n: usize) -> Vec<u16> {
    let reqs = (0..n).map(|i| async move {
        app.get(&format!("/api/v2/tasks/instances/{}", 1_000_000 + i))
            .await
            .status
            .as_u16()
    });
    futures::future::join_all(reqs).await
}

#[tokio::test]
async fn no_5xx_after_every_backend_is_terminated() {
    let app = TestApp::start().await;
    let admin = sqlx::PgPool::connect(&admin_url()).await.unwrap();
    for round in 0..3 {
        // Fill the pool with connections used a moment ago.
        let warm = burst(&app, 16).await;
        assert!(warm.iter().all(|&s| s == 404), "{warm:?}");
        // In the select list, so only the filtered rows are terminated.
        let killed: Vec<i32> = sqlx::query_scalar(
            "select pid from (select pid, pg_terminate_backend(pid) as done \
             from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()) t \
             where done",
        )
        .bind(&app.db.name)
        .fetch_all(&admin)
        .await
        .unwrap();
        assert!(
            !killed.is_empty(),
            "round {round}: the pool had connections"
        );
        wait_for("the terminated backends to exit", DEADLINE, || async {
            let left: i64 =
                sqlx::query_scalar("select count(*) from pg_stat_activity where pid = any($1)")
                    .bind(&killed)
                    .fetch_one(&admin)
                    .await
                    .unwrap();
            (left == 0).then_some(())
        })
        .await;
        let after = burst(&app, 16).await;
        assert!(
            after.iter().all(|&s| s < 500),
            "round {round}: requests after a mass termination got {after:?}"
        );
    }
    admin.close().await;
}

#[tokio::test]
async fn no_5xx_after_the_network_cuts_every_connection() {
    let proxy = Proxy::for_url(&admin_url()).await;
    let app = TestApp::start_through(&proxy).await;
    for round in 0..3 {
        let warm = burst(&app, 16).await;
        assert!(warm.iter().all(|&s| s == 404), "{warm:?}");
        assert!(proxy.open_connections() > 0);
        proxy.cut_all();
        wait_for("the cut connections to close", DEADLINE, || async {
            (proxy.open_connections() == 0).then_some(())
        })
        .await;
        let after = burst(&app, 16).await;
        assert!(
            after.iter().all(|&s| s < 500),
            "round {round}: requests after a cut got {after:?}"
        );
    }
}
