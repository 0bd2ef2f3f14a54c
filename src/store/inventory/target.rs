//! The joined view an operation needs of its target: a server with its
//! zone, cluster and host, read in one query.

use super::super::Result;
use super::{
    AgentStatus, ClusterRow, ClusterStatus, HostRow, ServerRow, ServerStatus, ZoneRow, ZoneStatus,
};
use sqlx::PgExecutor;

/// A server with its zone, cluster and host: what an operation on it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTarget {
    pub server: ServerRow,
    pub zone: ZoneRow,
    pub cluster: ClusterRow,
    pub host: HostRow,
}

/// A server with its zone, cluster and host, in one query.
pub async fn get_server_target(
    ex: impl PgExecutor<'_>,
    server: i64,
) -> Result<Option<ServerTarget>> {
    let row = sqlx::query!(
        r#"select s.id as s_id, s.cluster_id as s_cluster_id, s.zone_id as s_zone_id,
               s.host_id as s_host_id, s.ip as s_ip, s.sql_port as s_sql_port,
               s.rpc_port as s_rpc_port, s.status as "s_status: ServerStatus",
               s.create_time as s_create_time, s.update_time as s_update_time,
               z.id as z_id, z.cluster_id as z_cluster_id, z.name as z_name,
               z.status as "z_status: ZoneStatus", z.create_time as z_create_time,
               z.update_time as z_update_time,
               c.id as c_id, c.name as c_name, c.ob_cluster_id as c_ob_cluster_id,
               c.status as "c_status: ClusterStatus", c.create_time as c_create_time,
               c.update_time as c_update_time,
               h.id as h_id, h.name as h_name, h.ip as h_ip, h.agent_url as h_agent_url,
               h.agent_status as "h_agent_status: AgentStatus", h.create_time as h_create_time,
               h.update_time as h_update_time
           from ob_server s
           join ob_zone z on z.id = s.zone_id
           join ob_cluster c on c.id = s.cluster_id
           join host h on h.id = s.host_id
           where s.id = $1"#,
        server,
    )
    .fetch_optional(ex)
    .await?;
    Ok(row.map(|r| ServerTarget {
        server: ServerRow {
            id: r.s_id,
            cluster_id: r.s_cluster_id,
            zone_id: r.s_zone_id,
            host_id: r.s_host_id,
            ip: r.s_ip,
            sql_port: r.s_sql_port,
            rpc_port: r.s_rpc_port,
            status: r.s_status,
            create_time: r.s_create_time,
            update_time: r.s_update_time,
        },
        zone: ZoneRow {
            id: r.z_id,
            cluster_id: r.z_cluster_id,
            name: r.z_name,
            status: r.z_status,
            create_time: r.z_create_time,
            update_time: r.z_update_time,
        },
        cluster: ClusterRow {
            id: r.c_id,
            name: r.c_name,
            ob_cluster_id: r.c_ob_cluster_id,
            status: r.c_status,
            create_time: r.c_create_time,
            update_time: r.c_update_time,
        },
        host: HostRow {
            id: r.h_id,
            name: r.h_name,
            ip: r.h_ip,
            agent_url: r.h_agent_url,
            agent_status: r.h_agent_status,
            create_time: r.h_create_time,
            update_time: r.h_update_time,
        },
    }))
}
