//! PostgreSQL faults seen by the API and by actions: connections
//! terminated under the pool (by PostgreSQL or by a network cut, through
//! `faults::proxy`) are replaced, not handed to requests; a statement that
//! failed for its connection is retried on a fresh one (`db::retry`), never
//! answered 500; an operation whose commit reply was lost returns the same
//! task to its retry; actions' log lines and inventory writes survive a
//! broken connection.

use crate::actions::World;
use crate::app::TestApp;
use crate::faults::proxy::{AfterDrop, Proxy};
use crate::support::engine::{fast_cfg, submit};
use crate::support::{admin_url, wait_for, TestDb};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use taskd::actions::Registry;
use taskd::dag::NodeSpec;
use taskd::engine::Worker;
use taskd::model::TaskStatus;
use tokio_util::sync::CancellationToken;

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

/// Terminates every backend of database `db` but the caller's, every
/// `every`, until `stop`; returns how many it terminated.
fn terminate_in_a_loop(
    db: String,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let admin = sqlx::PgPool::connect(&admin_url()).await.unwrap();
        let mut killed = 0;
        while !stop.load(Ordering::SeqCst) {
            let n: i64 = sqlx::query_scalar(
                "select count(*) from (select pg_terminate_backend(pid) as done \
                 from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()) t \
                 where done",
            )
            .bind(&db)
            .fetch_one(&admin)
            .await
            .unwrap();
            killed += n as usize;
            tokio::time::sleep(every).await;
        }
        admin.close().await;
        killed
    })
}

#[tokio::test]
async fn no_5xx_while_backends_are_terminated_under_requests() {
    let owned = TestApp::start().await;
    let app = &owned;
    let mut zones = Vec::new();
    for i in 0..6 {
        zones.push((format!("z{i}"), app.add_host(&format!("h{i}")).await));
    }
    let zones: Vec<(&str, i64, &str)> = zones
        .iter()
        .map(|(z, h)| (z.as_str(), *h, "RUNNING"))
        .collect();
    let c = app.add_cluster("protoss", &zones).await;
    let cluster = c["id"].as_i64().unwrap();
    let servers: Vec<i64> = (0..6)
        .map(|i| c["zones"][i]["servers"][0]["id"].as_i64().unwrap())
        .collect();
    let restart = |s: i64| format!("/api/v2/ob/clusters/{cluster}/servers/{s}/restart");
    let stop = Arc::new(AtomicBool::new(false));
    let killer = terminate_in_a_loop(
        app.db.name.clone(),
        Duration::from_millis(250),
        stop.clone(),
    );
    let mut seen = std::collections::BTreeMap::<u16, usize>::new();
    let mut first: Vec<Option<i64>> = vec![None; servers.len()];
    for round in 0..25 {
        let keyed = servers.iter().enumerate().map(|(i, s)| {
            let req = app
                .client
                .post(app.url(&restart(*s)))
                .header("Idempotency-Key", format!("terminate-{i}"));
            async move { (i, app.send(req).await) }
        });
        let gets = (0..6).map(|i| async move {
            let path = if i % 2 == 0 {
                "/api/v2/tasks/instances".to_string()
            } else {
                format!("/api/v2/tasks/instances/{}", 1 + i)
            };
            app.get(&path).await
        });
        // Without a key: the server is busy (409), or, when the statement
        // failed for its connection and may have committed, 503.
        // From round 1 on, when the keyed request holds the server.
        let keyless = (0..if round == 0 { 0 } else { 2 }).map(|_| {
            let path = restart(servers[0]);
            async move { app.post(&path).await }
        });
        let (keyed, gets, keyless) = tokio::join!(
            futures::future::join_all(keyed),
            futures::future::join_all(gets),
            futures::future::join_all(keyless)
        );
        for (i, a) in &keyed {
            assert_eq!(a.status, 200, "round {round}: keyed POST got {:?}", a.body);
            let id = a.ok()["id"].as_i64().unwrap();
            assert_eq!(
                *first[*i].get_or_insert(id),
                id,
                "a replay returns the first task"
            );
        }
        for a in &gets {
            assert!(
                a.status.as_u16() < 500,
                "round {round}: GET got {} {:?}",
                a.status,
                a.body
            );
            *seen.entry(a.status.as_u16()).or_default() += 1;
        }
        for a in &keyless {
            let st = a.status.as_u16();
            *seen.entry(st).or_default() += 1;
            assert!(
                st == 409 || st == 503,
                "round {round}: keyless POST got {st} {:?}",
                a.body
            );
            if st == 503 {
                assert_eq!(a.error_code(), "SERVICE_UNAVAILABLE");
                assert!(a.headers.contains_key("retry-after"));
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let killed = killer.await.unwrap();
    println!("{killed} backends terminated under the requests; statuses {seen:?}");
    assert!(killed > 5, "backends were terminated while requests ran");
    assert_eq!(app.task_count().await, servers.len() as i64);
}

#[tokio::test]
async fn an_operation_whose_commit_reply_was_lost_returns_the_same_task_to_its_retry() {
    let proxy = Proxy::for_url(&admin_url()).await;
    let app = TestApp::start_through(&proxy).await;
    let host = app.add_host("h0").await;
    let host2 = app.add_host("h1").await;
    let c = app
        .add_cluster(
            "protoss",
            &[("z0", host, "RUNNING"), ("z1", host2, "RUNNING")],
        )
        .await;
    let cluster = c["id"].as_i64().unwrap();
    let server = |i: usize| c["zones"][i]["servers"][0]["id"].as_i64().unwrap();
    let stop = |i: usize| format!("/api/v2/ob/clusters/{cluster}/servers/{}/stop", server(i));
    // The trace id is bound only by the statement that inserts the task:
    // the reply to that statement, which committed, never reaches taskd.
    let trace = format!("lostreply-{:08x}", rand::random::<u32>());
    proxy.drop_reply_to(&trace, AfterDrop::Reset);
    let req = || {
        app.client
            .post(app.url(&stop(0)))
            .header("Idempotency-Key", "stop-once")
            .header("X-Trace-Id", &trace)
    };
    let a = app.send(req()).await;
    assert_eq!(proxy.replies_dropped(), 1, "the insert's reply was dropped");
    assert_eq!(a.status, 200, "no 5xx for a lost reply: {:?}", a.body);
    let id = a.ok()["id"].as_i64().unwrap();
    // The caller retries anyway, with the same key: the same task.
    let again = app.send(req()).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.ok()["id"].as_i64(), Some(id));
    assert_eq!(app.task_count().await, 1);

    // Without a key the outcome is unknown to the server: a clear 503, and
    // the caller finds the task that was created.
    let trace = format!("lostreply-{:08x}", rand::random::<u32>());
    proxy.drop_reply_to(&trace, AfterDrop::Reset);
    let a = app
        .send(
            app.client
                .post(app.url(&stop(1)))
                .header("X-Trace-Id", &trace),
        )
        .await;
    assert_eq!(proxy.replies_dropped(), 2);
    assert_eq!(a.status, 503, "{:?}", a.body);
    assert_eq!(a.error_code(), "SERVICE_UNAVAILABLE");
    assert!(a.headers.contains_key("retry-after"));
    assert_eq!(app.task_count().await, 2, "the commit landed");
}

/// A worker with the standard registry on a pool through `proxy`.
async fn worker_through(
    proxy: &Proxy,
    url: &str,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<taskd::engine::Result<()>> {
    let pool = taskd::db::connect(&proxy.url(url), 4).await.unwrap();
    let w = Worker::new(pool, Registry::standard(), fast_cfg());
    tokio::spawn(w.run(stop.clone()))
}

#[tokio::test]
async fn a_log_line_whose_connection_breaks_is_still_written() {
    let db = TestDb::new().await;
    let proxy = Proxy::for_url(&db.url).await;
    // Only the actions' own log statement has this text.
    proxy.drop_reply_to("line) values ($1", AfterDrop::Reset);
    let id = submit(&db, vec![NodeSpec::new("a", "test.sleep?ms=10", 30)]).await;
    let stop = CancellationToken::new();
    let run = worker_through(&proxy, &db.url, &stop).await;
    wait_for("the task to succeed", Duration::from_secs(20), || async {
        let t = taskd::store::task::get(&db.pool, id).await.unwrap()?;
        (t.status == TaskStatus::Successful).then_some(())
    })
    .await;
    assert_eq!(proxy.replies_dropped(), 1);
    let sub = taskd::store::subtask::list_for_task(&db.pool, id)
        .await
        .unwrap()[0]
        .clone();
    let lines = taskd::store::log::lines(&db.pool, sub.id, Some(1))
        .await
        .unwrap();
    let n = lines.iter().filter(|(_, l)| l == "sleeping 10 ms").count();
    assert_eq!(n, 1, "the action's line is there once: {lines:?}");
    stop.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_inventory_write_whose_connection_breaks_costs_no_attempt() {
    let w = World::new(&["RUNNING"], None).await;
    w.stop_in_process_worker().await;
    let proxy = Proxy::for_url(&w.app.db.url).await;
    // The first status write of the restart (RESTARTING) loses its
    // connection; then a log line does.
    proxy.drop_reply_to("update ob_server set status", AfterDrop::Reset);
    let stop = CancellationToken::new();
    let run = worker_through(&proxy, &w.app.db.url, &stop).await;
    let id = w.post(&w.op("restart", 0)).await;
    wait_for(
        "the status write's reply to be dropped",
        Duration::from_secs(20),
        || async { (proxy.replies_dropped() == 1).then_some(()) },
    )
    .await;
    proxy.drop_reply_to("line) values ($1", AfterDrop::Reset);
    let t = w.settled(id).await;
    assert_eq!(t["status"], "SUCCESSFUL", "{t:#}");
    assert_eq!(proxy.replies_dropped(), 2);
    for s in t["subtasks"].as_array().unwrap() {
        assert_eq!(
            s["runTime"], 1,
            "no attempt was lost to a connection: {s:#}"
        );
    }
    assert_eq!(w.statuses(0).await.0, "RUNNING");
    stop.cancel();
    run.await.unwrap().unwrap();
    w.finish().await;
}
