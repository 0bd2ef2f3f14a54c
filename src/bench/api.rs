//! The `api` bench scenario: operation requests through the REST API
//! against an inventory of one server per request, timed end to end.

use super::*;

/// One server per request, so no request meets a RUNNING task on its
/// target: a cluster with one zone and `n` servers, each on its own host.
async fn api_inventory(pool: &PgPool, n: usize) -> anyhow::Result<(i64, Vec<i64>)> {
    use crate::store::inventory::{
        self as inv, AgentStatus, ClusterStatus, ServerStatus, ZoneStatus,
    };
    let mut tx = pool.begin().await?;
    let c = inv::insert_cluster(
        &mut *tx,
        &inv::NewCluster {
            name: "bench".into(),
            ob_cluster_id: 1,
            status: ClusterStatus::Running,
        },
    )
    .await?;
    let z = inv::insert_zone(
        &mut *tx,
        &inv::NewZone {
            cluster_id: c.id,
            name: "zone1".into(),
            status: ZoneStatus::Running,
        },
    )
    .await?;
    let mut servers = Vec::with_capacity(n);
    for i in 0..n {
        let h = inv::insert_host(
            &mut *tx,
            &inv::NewHost {
                name: format!("bench-host-{i}"),
                ip: "127.0.0.1".into(),
                agent_url: "http://127.0.0.1:9".into(),
                agent_status: AgentStatus::Online,
            },
        )
        .await?;
        let s = inv::insert_server(
            &mut *tx,
            &inv::NewServer {
                cluster_id: c.id,
                zone_id: z.id,
                host_id: h.id,
                ip: "127.0.0.1".into(),
                sql_port: 2881,
                rpc_port: 2882,
                status: ServerStatus::Running,
            },
        )
        .await?;
        servers.push(s.id);
    }
    tx.commit().await?;
    Ok((c.id, servers))
}

/// POST restart at a fixed rate against the in-process API (no workers:
/// the tasks stay RUNNING); client-side latency percentiles.
pub(super) async fn api_scenario(args: &BenchArgs, pool: &PgPool) -> anyhow::Result<Value> {
    let n = (args.api_rate * args.api_seconds) as usize;
    let (cluster, servers) = api_inventory(pool, n.max(1)).await?;
    let password = crate::auth::generate_password();
    crate::auth::ensure_admin(pool, "bench", &password).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let api_only = crate::app::Settings {
        engine: crate::engine::EngineConfig::default(),
        auth: crate::auth::AuthConfig::default(),
        workers: 0,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let server =
        crate::app::App::build(pool.clone(), Some(listener), api_only)?.spawn(stop.clone());
    let client = reqwest::Client::new();
    let interval = Duration::from_secs_f64(1.0 / args.api_rate.max(1) as f64);
    let mut next = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for server_id in servers {
        let url = format!("http://{addr}/api/v2/ob/clusters/{cluster}/servers/{server_id}/restart");
        let client = client.clone();
        let password = password.clone();
        calls.spawn(async move {
            let t = Instant::now();
            let status = client
                .post(&url)
                .basic_auth("bench", Some(&password))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            (status, t.elapsed().as_secs_f64() * 1000.0)
        });
        next += interval;
        tokio::time::sleep_until(next.into()).await;
    }
    let mut lat = Vec::new();
    let mut ok = 0;
    while let Some(r) = calls.join_next().await {
        let (status, ms) = r?;
        ok += usize::from(status == 200);
        lat.push(ms);
    }
    stop.cancel();
    let _ = server.await;
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok(json!({
        "scenario": "api", "offered_per_s": args.api_rate, "requests": lat.len(), "ok": ok,
        "p50_ms": round2(pct(0.5)), "p99_ms": round2(pct(0.99)), "max_ms": round2(pct(1.0)),
    }))
}
