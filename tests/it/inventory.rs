//! The inventory store against a real database: the joined target lookup,
//! fenced status changes, and the invariants the schema itself enforces
//! (statuses, ports, a server's zone in its cluster, comments for DBAs).

use crate::support::TestDb;
use taskd::store::inventory::{
    self as inv, AgentStatus, ClusterStatus, NewCluster, NewHost, NewServer, NewZone, ServerStatus,
    ZoneStatus,
};

struct Fixture {
    host: i64,
    cluster: i64,
    zone: i64,
    server: i64,
}

async fn fixture(db: &TestDb) -> Fixture {
    let host = inv::insert_host(
        &db.pool,
        &NewHost {
            name: "host-a".into(),
            ip: "10.0.0.1".into(),
            agent_url: "http://10.0.0.1:62888".into(),
            agent_status: AgentStatus::Online,
        },
    )
    .await
    .expect("insert host");
    let cluster = inv::insert_cluster(
        &db.pool,
        &NewCluster {
            name: "protoss".into(),
            ob_cluster_id: 12000001,
            status: ClusterStatus::Running,
        },
    )
    .await
    .expect("insert cluster");
    let zone = inv::insert_zone(
        &db.pool,
        &NewZone {
            cluster_id: cluster.id,
            name: "zone2".into(),
            status: ZoneStatus::Running,
        },
    )
    .await
    .expect("insert zone");
    let server = inv::insert_server(
        &db.pool,
        &NewServer {
            cluster_id: cluster.id,
            zone_id: zone.id,
            host_id: host.id,
            ip: "10.0.0.1".into(),
            sql_port: 2881,
            rpc_port: 2882,
            status: ServerStatus::Running,
        },
    )
    .await
    .expect("insert server");
    Fixture {
        host: host.id,
        cluster: cluster.id,
        zone: zone.id,
        server: server.id,
    }
}

#[tokio::test]
async fn a_server_target_joins_its_zone_cluster_and_host() {
    let db = TestDb::new().await;
    let f = fixture(&db).await;
    let t = inv::get_server_target(&db.pool, f.server)
        .await
        .expect("query")
        .expect("found");
    assert_eq!(t.server.id, f.server);
    assert_eq!((t.server.sql_port, t.server.rpc_port), (2881, 2882));
    assert_eq!(t.zone.id, f.zone);
    assert_eq!(t.zone.name, "zone2");
    assert_eq!(t.cluster.id, f.cluster);
    assert_eq!(t.cluster.name, "protoss");
    assert_eq!(t.host.id, f.host);
    assert_eq!(t.host.agent_url, "http://10.0.0.1:62888");
    assert_eq!(t.host.agent_status, AgentStatus::Online);
    assert!(inv::get_server_target(&db.pool, 424242)
        .await
        .expect("query")
        .is_none());
    assert_eq!(
        inv::servers_of_cluster(&db.pool, f.cluster)
            .await
            .expect("query"),
        std::slice::from_ref(&t.server)
    );
    assert_eq!(
        inv::servers_of_zone(&db.pool, f.zone).await.expect("query"),
        std::slice::from_ref(&t.server)
    );
    assert_eq!(
        inv::get_zone(&db.pool, f.zone).await.expect("query"),
        Some(t.zone.clone())
    );
    assert_eq!(
        inv::get_clusters(&db.pool, &[f.cluster, 999])
            .await
            .expect("query"),
        std::slice::from_ref(&t.cluster)
    );
}

#[tokio::test]
async fn status_changes_are_fenced_on_the_expected_status() {
    let db = TestDb::new().await;
    let f = fixture(&db).await;
    let pool = &db.pool;
    // Wrong expectation: nothing changes.
    assert!(!inv::set_server_status(
        pool,
        f.server,
        ServerStatus::Running,
        Some(ServerStatus::Stopped)
    )
    .await
    .expect("update"));
    assert!(inv::set_server_status(
        pool,
        f.server,
        ServerStatus::Restarting,
        Some(ServerStatus::Running)
    )
    .await
    .expect("update"));
    assert!(
        inv::set_server_status(pool, f.server, ServerStatus::Running, None)
            .await
            .expect("update")
    );
    assert!(
        !inv::set_server_status(pool, 424242, ServerStatus::Running, None)
            .await
            .expect("update")
    );
    assert!(inv::set_zone_status(
        pool,
        f.zone,
        ZoneStatus::Operating,
        Some(ZoneStatus::Running)
    )
    .await
    .expect("update"));
    assert!(
        !inv::set_zone_status(pool, f.zone, ZoneStatus::Running, Some(ZoneStatus::Stopped))
            .await
            .expect("update")
    );
    assert!(inv::set_cluster_status(
        pool,
        f.cluster,
        ClusterStatus::Operating,
        Some(ClusterStatus::Running)
    )
    .await
    .expect("update"));
    assert!(inv::set_host_agent_status(
        pool,
        f.host,
        AgentStatus::Restarting,
        Some(AgentStatus::Online)
    )
    .await
    .expect("update"));
    assert!(!inv::set_host_agent_status(
        pool,
        f.host,
        AgentStatus::Online,
        Some(AgentStatus::Offline)
    )
    .await
    .expect("update"));
    let t = inv::get_server_target(pool, f.server)
        .await
        .expect("query")
        .expect("found");
    assert_eq!(t.server.status, ServerStatus::Running);
    assert_eq!(t.zone.status, ZoneStatus::Operating);
    assert_eq!(t.cluster.status, ClusterStatus::Operating);
    assert_eq!(t.host.agent_status, AgentStatus::Restarting);
    assert!(t.server.update_time >= t.server.create_time);
}

#[tokio::test]
async fn the_schema_enforces_the_inventory_invariants() {
    let db = TestDb::new().await;
    let f = fixture(&db).await;
    let pool = &db.pool;
    let other = inv::insert_cluster(
        pool,
        &NewCluster {
            name: "zerg".into(),
            ob_cluster_id: 1,
            status: ClusterStatus::Running,
        },
    )
    .await
    .expect("insert cluster");
    let server = |cluster_id, zone_id, sql_port, rpc_port| NewServer {
        cluster_id,
        zone_id,
        host_id: f.host,
        ip: "10.0.0.1".into(),
        sql_port,
        rpc_port,
        status: ServerStatus::Running,
    };
    // A server's zone must be in the server's cluster.
    assert!(
        inv::insert_server(pool, &server(other.id, f.zone, 3881, 3882))
            .await
            .is_err()
    );
    // Ports: unique per host, in range, distinct.
    let dup = inv::insert_server(pool, &server(f.cluster, f.zone, 2881, 3882))
        .await
        .expect_err("same SQL port on the host");
    assert!(dup.unique_violation().is_some());
    assert!(
        inv::insert_server(pool, &server(f.cluster, f.zone, 0, 3882))
            .await
            .is_err()
    );
    assert!(
        inv::insert_server(pool, &server(f.cluster, f.zone, 3881, 3881))
            .await
            .is_err()
    );
    // Zone names are unique per cluster, not globally.
    let zone = |cluster_id| NewZone {
        cluster_id,
        name: "zone2".into(),
        status: ZoneStatus::Running,
    };
    assert!(inv::insert_zone(pool, &zone(f.cluster)).await.is_err());
    assert!(inv::insert_zone(pool, &zone(other.id)).await.is_ok());
    // Statuses outside the lists are refused by CHECKs.
    for (table, column) in [
        ("host", "agent_status"),
        ("ob_cluster", "status"),
        ("ob_zone", "status"),
        ("ob_server", "status"),
    ] {
        let e = sqlx::query(&format!("update {table} set {column} = 'BOGUS'"))
            .execute(pool)
            .await
            .expect_err("a CHECK refuses it");
        let code = e
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.to_string());
        assert_eq!(code.as_deref(), Some("23514"), "{table}.{column}");
    }
    // Every table and column is commented for the DBAs.
    let missing: Vec<String> = sqlx::query_scalar(
        "select c.relname || coalesce('.' || a.attname, '') from pg_class c \
         left join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped \
         where c.relname in ('host', 'ob_cluster', 'ob_zone', 'ob_server') and c.relkind = 'r' \
           and col_description(c.oid, a.attnum) is null \
         union all \
         select c.relname from pg_class c \
         where c.relname in ('host', 'ob_cluster', 'ob_zone', 'ob_server') and c.relkind = 'r' \
           and obj_description(c.oid, 'pg_class') is null",
    )
    .fetch_all(pool)
    .await
    .expect("query comments");
    assert!(missing.is_empty(), "uncommented: {missing:?}");
}
