//! The demo's inventory (cluster `demo`, three zones of two servers, one
//! server per host, created once and brought up to date with the hosts'
//! addresses and ports on every start) and its admin user.

use super::hosts::{Layout, HOSTS, SERVERS_PER_ZONE, ZONES};
use crate::store::inventory::{
    self, AgentStatus, ClusterStatus, NewCluster, NewHost, NewServer, NewZone, ServerStatus,
    ZoneStatus,
};
use sqlx::PgPool;

/// A demo server: id, whether it is RUNNING, its host's index, SQL port.
pub type DemoServer = (i64, bool, usize, i32);

/// The demo inventory: reused when it exists (agent URLs, addresses and
/// ports refreshed), created otherwise. Returns (cluster id, server ids and
/// whether each is RUNNING, host ids).
pub async fn inventory(
    pool: &PgPool,
    layout: Layout,
) -> anyhow::Result<(i64, Vec<DemoServer>, Vec<i64>)> {
    let mut tx = pool.begin().await?;
    let mut hosts = Vec::new();
    for i in 0..HOSTS {
        let name = format!("demo-host-{}", i + 1);
        let url = layout.agent_url(i);
        let id = match inventory::find_host_by_name(&mut *tx, &name).await? {
            Some(h) => {
                inventory::set_host_agent_online(&mut *tx, h.id, &url).await?;
                inventory::set_host_address(&mut *tx, h.id, &layout.host_ip(i).to_string()).await?;
                h.id
            }
            None => {
                inventory::insert_host(
                    &mut *tx,
                    &NewHost {
                        name,
                        ip: layout.host_ip(i).to_string(),
                        agent_url: url,
                        agent_status: AgentStatus::Online,
                    },
                )
                .await?
                .id
            }
        };
        hosts.push(id);
    }
    let cluster = match inventory::find_cluster_by_name(&mut *tx, "demo").await? {
        Some(c) => c.id,
        None => {
            let c = inventory::insert_cluster(
                &mut *tx,
                &NewCluster {
                    name: "demo".into(),
                    ob_cluster_id: 1,
                    status: ClusterStatus::Running,
                },
            )
            .await?;
            for z in 0..ZONES {
                let zone = inventory::insert_zone(
                    &mut *tx,
                    &NewZone {
                        cluster_id: c.id,
                        name: format!("zone{}", z + 1),
                        status: ZoneStatus::Running,
                    },
                )
                .await?;
                for s in 0..SERVERS_PER_ZONE {
                    let h = z * SERVERS_PER_ZONE + s;
                    inventory::insert_server(
                        &mut *tx,
                        &NewServer {
                            cluster_id: c.id,
                            zone_id: zone.id,
                            host_id: hosts[h],
                            ip: layout.host_ip(h).to_string(),
                            sql_port: i32::from(layout.sql_port),
                            rpc_port: i32::from(layout.sql_port) + 1,
                            status: ServerStatus::Running,
                        },
                    )
                    .await?;
                }
            }
            c.id
        }
    };
    // The observers' ports may have moved since the last demo.
    inventory::set_cluster_ports(
        &mut *tx,
        cluster,
        i32::from(layout.sql_port),
        i32::from(layout.sql_port) + 1,
    )
    .await?;
    let servers = inventory::servers_of_cluster(&mut *tx, cluster)
        .await?
        .into_iter()
        .map(|s| {
            let host = hosts.iter().position(|h| *h == s.host_id).unwrap_or(0);
            (s.id, s.status == ServerStatus::Running, host, s.sql_port)
        })
        .collect();
    tx.commit().await?;
    Ok((cluster, servers, hosts))
}

/// The demo's admin: from TASKD_ADMIN_USER / TASKD_ADMIN_PASSWORD when set,
/// else `admin` with a new generated password (set even when `admin`
/// exists from an earlier demo, so the printed password works).
pub async fn demo_admin(
    pool: &PgPool,
    args: &crate::config::AuthArgs,
) -> anyhow::Result<(String, String)> {
    if let Some((name, password)) = args.admin() {
        crate::auth::ensure_admin(pool, name, password).await?;
        return Ok((name.to_string(), password.to_string()));
    }
    let password = crate::auth::generate_password();
    crate::auth::ensure_admin(pool, "admin", &password).await?;
    crate::auth::users::set_password_by_name(pool, "admin", &password).await?;
    Ok(("admin".into(), password))
}
