//! Each fault of the proxy and the private cluster, observed by a real sqlx
//! connection.

use super::pgcluster::{PgCluster, StopMode};
use super::proxy::{AfterDrop, Proxy};
use crate::support::{admin_url, wait_for, TestDb};
use sqlx::{Connection, PgConnection};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(20);
/// How long a test waits to see that something does NOT happen.
const QUIET: Duration = Duration::from_millis(300);

async fn connect(url: &str) -> Result<PgConnection, sqlx::Error> {
    tokio::time::timeout(DEADLINE, PgConnection::connect(url))
        .await
        .expect("connect answered within the deadline")
}

async fn one(c: &mut PgConnection) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("select 1").fetch_one(c).await
}

fn is_io(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(_))
}

#[tokio::test]
async fn proxy_forwards_and_refuses_new_connections_only() {
    let proxy = Proxy::for_url(&admin_url()).await;
    let url = proxy.url(&admin_url());
    let mut open = connect(&url).await.expect("a connection through the proxy");
    assert_eq!(one(&mut open).await.unwrap(), 1);

    proxy.refuse();
    let e = connect(&url).await.expect_err("refused");
    assert!(is_io(&e), "a refused connect is an io error: {e:?}");
    assert_eq!(proxy.refused(), 1);
    assert_eq!(one(&mut open).await.unwrap(), 1, "open ones keep working");

    proxy.normal();
    let mut again = connect(&url).await.expect("accepted again");
    assert_eq!(one(&mut again).await.unwrap(), 1);
}

#[tokio::test]
async fn proxy_black_hole_holds_bytes_until_healed() {
    let proxy = Proxy::for_url(&admin_url()).await;
    let url = proxy.url(&admin_url());
    let mut open = connect(&url).await.unwrap();
    proxy.black_hole();
    let query = tokio::spawn(async move { one(&mut open).await.map(|v| (v, open)) });
    let url2 = url.clone();
    let new_conn = tokio::spawn(async move { PgConnection::connect(&url2).await });
    tokio::time::sleep(QUIET).await;
    assert!(!query.is_finished(), "no answer through a black hole");
    assert!(!new_conn.is_finished(), "a new connection hears nothing");
    assert_eq!(proxy.refused(), 0, "nothing is refused or reset");

    proxy.normal();
    let (v, _open) = tokio::time::timeout(DEADLINE, query)
        .await
        .expect("answered once healed")
        .unwrap()
        .expect("the held query runs");
    assert_eq!(v, 1);
    let mut c = tokio::time::timeout(DEADLINE, new_conn)
        .await
        .expect("connected once healed")
        .unwrap()
        .expect("the held connect completes");
    assert_eq!(one(&mut c).await.unwrap(), 1);
}

#[tokio::test]
async fn proxy_cut_resets_open_connections_and_their_backends() {
    let proxy = Proxy::for_url(&admin_url()).await;
    let url = proxy.url(&admin_url());
    let mut a = connect(&url).await.unwrap();
    let pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&mut a)
        .await
        .unwrap();
    assert_eq!(proxy.open_connections(), 1);

    proxy.cut_all();
    let e = one(&mut a).await.expect_err("a cut connection fails");
    assert!(is_io(&e), "a cut is an io error: {e:?}");
    wait_for(
        "the proxy to close the cut connection",
        DEADLINE,
        || async { (proxy.open_connections() == 0).then_some(()) },
    )
    .await;
    let direct = sqlx::PgPool::connect(&admin_url()).await.unwrap();
    wait_for("the cut backend to end", DEADLINE, || async {
        let n: i64 = sqlx::query_scalar("select count(*) from pg_stat_activity where pid = $1")
            .bind(pid)
            .fetch_one(&direct)
            .await
            .unwrap();
        (n == 0).then_some(())
    })
    .await;
    direct.close().await;

    let mut b = connect(&url)
        .await
        .expect("new connections are not affected");
    assert_eq!(one(&mut b).await.unwrap(), 1);
}

#[tokio::test]
async fn proxy_drops_one_reply_after_the_statement_committed() {
    let db = TestDb::new().await;
    sqlx::query("create table fault_probe (v int)")
        .execute(&db.pool)
        .await
        .unwrap();
    let proxy = Proxy::for_url(&db.url).await;
    let url = proxy.url(&db.url);
    let mut c = connect(&url).await.unwrap();

    proxy.drop_reply_to("COMMIT", AfterDrop::Reset);
    assert_eq!(one(&mut c).await.unwrap(), 1, "other statements pass");
    assert!(proxy.reply_drop_pending());
    let mut tx = c.begin().await.unwrap();
    sqlx::query("insert into fault_probe values (1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let e = tx.commit().await.expect_err("the commit's reply is lost");
    assert!(is_io(&e), "a lost reply is an io error: {e:?}");
    assert_eq!(proxy.replies_dropped(), 1);
    let n: i64 = sqlx::query_scalar("select count(*) from fault_probe")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        n, 1,
        "the statement took effect although its reply was lost"
    );

    // Once only: the next connection is answered.
    let mut d = connect(&url).await.unwrap();
    sqlx::query("insert into fault_probe values (2)")
        .execute(&mut d)
        .await
        .expect("answered");

    // Hang: the connection stays open and silent.
    let mut h = connect(&url).await.unwrap();
    proxy.drop_next_reply(AfterDrop::Hang);
    let stuck = tokio::spawn(async move { one(&mut h).await });
    tokio::time::sleep(QUIET).await;
    assert!(
        !stuck.is_finished(),
        "a swallowed reply leaves the caller waiting"
    );
    assert_eq!(proxy.replies_dropped(), 2);
    assert_eq!(proxy.open_connections(), 2, "d and h are open, c was reset");
    stuck.abort();
}

#[tokio::test]
async fn proxy_latency_delays_every_round_trip() {
    let proxy = Proxy::for_url(&admin_url()).await;
    let url = proxy.url(&admin_url());
    let mut c = connect(&url).await.unwrap();
    let lag = Duration::from_millis(150);
    proxy.set_latency(lag);
    let t = Instant::now();
    assert_eq!(one(&mut c).await.unwrap(), 1);
    assert!(
        t.elapsed() >= lag * 2,
        "a round trip waits once each way: {:?}",
        t.elapsed()
    );
    proxy.set_latency(Duration::ZERO);
    assert_eq!(one(&mut c).await.unwrap(), 1);
}

#[tokio::test]
async fn private_cluster_stops_restarts_and_cleans_up() {
    let pg = PgCluster::start().await;
    let dir = pg.dir().to_path_buf();
    let url = pg.database().await;
    let mut c = connect(&url).await.expect("the private cluster answers");
    let n: i64 = sqlx::query_scalar("select count(*) from task_instance")
        .fetch_one(&mut c)
        .await
        .expect("migrated");
    assert_eq!(n, 0);

    pg.stop(StopMode::Fast).await;
    assert!(!pg.is_running().await);
    assert!(one(&mut c).await.is_err(), "its sessions ended");
    assert!(connect(&url).await.is_err(), "nothing listens while down");
    pg.start_again().await;
    let mut c = connect(&url).await.expect("up again on the same port");
    assert_eq!(one(&mut c).await.unwrap(), 1);

    pg.restart(StopMode::Immediate).await;
    assert!(one(&mut c).await.is_err(), "a crash ends the session");
    let mut c = connect(&url).await.expect("up after crash recovery");
    assert_eq!(one(&mut c).await.unwrap(), 1);

    let t = Instant::now();
    pg.stop_for(Duration::from_millis(500), StopMode::Immediate)
        .await;
    assert!(t.elapsed() >= Duration::from_millis(500));
    let mut c = connect(&url).await.expect("up after the outage");
    assert_eq!(one(&mut c).await.unwrap(), 1);
    drop(c);

    drop(pg);
    assert!(!dir.exists(), "the cluster's directory is removed on drop");
}

#[tokio::test]
async fn proxy_in_front_of_a_restarting_private_cluster() {
    let pg = PgCluster::start().await;
    let proxy = Proxy::start(pg.addr()).await;
    let url = proxy.url(&pg.url("postgres"));
    let mut c = connect(&url).await.unwrap();
    pg.stop(StopMode::Fast).await;
    assert!(one(&mut c).await.is_err());
    assert!(
        connect(&url).await.is_err(),
        "the server is down behind the proxy"
    );
    pg.start_again().await;
    let mut c = connect(&url)
        .await
        .expect("the proxy reaches the restarted server");
    assert_eq!(one(&mut c).await.unwrap(), 1);
}
