//! The inventory's answers: hosts, clusters with their zones and servers, in
//! OCP's JSON shape.

use super::super::envelope::ser_time;
use super::super::error::Result;
use crate::store::inventory::{
    self, AgentStatus, ClusterRow, ClusterStatus, HostRow, ServerRow, ServerStatus, ZoneRow,
    ZoneStatus,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use std::collections::HashMap;
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostView {
    pub id: i64,
    pub name: String,
    pub ip: String,
    pub agent_url: String,
    pub agent_status: AgentStatus,
    #[serde(serialize_with = "ser_time")]
    #[schema(value_type = String, format = DateTime)]
    pub create_time: DateTime<Utc>,
    #[serde(serialize_with = "ser_time")]
    #[schema(value_type = String, format = DateTime)]
    pub update_time: DateTime<Utc>,
}

impl From<HostRow> for HostView {
    fn from(h: HostRow) -> Self {
        HostView {
            id: h.id,
            name: h.name,
            ip: h.ip,
            agent_url: h.agent_url,
            agent_status: h.agent_status,
            create_time: h.create_time,
            update_time: h.update_time,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    pub id: i64,
    pub name: String,
    pub ob_cluster_id: i64,
    pub status: ClusterStatus,
    #[serde(serialize_with = "ser_time")]
    #[schema(value_type = String, format = DateTime)]
    pub create_time: DateTime<Utc>,
    #[serde(serialize_with = "ser_time")]
    #[schema(value_type = String, format = DateTime)]
    pub update_time: DateTime<Utc>,
    pub zones: Vec<ZoneView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZoneView {
    pub id: i64,
    pub cluster_id: i64,
    pub name: String,
    pub status: ZoneStatus,
    #[serde(serialize_with = "ser_time")]
    #[schema(value_type = String, format = DateTime)]
    pub create_time: DateTime<Utc>,
    #[serde(serialize_with = "ser_time")]
    #[schema(value_type = String, format = DateTime)]
    pub update_time: DateTime<Utc>,
    pub servers: Vec<ServerView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerView {
    pub id: i64,
    pub cluster_id: i64,
    pub zone_id: i64,
    pub zone_name: String,
    pub host_id: i64,
    pub ip: String,
    pub sql_port: i32,
    pub rpc_port: i32,
    pub status: ServerStatus,
    #[serde(serialize_with = "ser_time")]
    #[schema(value_type = String, format = DateTime)]
    pub create_time: DateTime<Utc>,
    #[serde(serialize_with = "ser_time")]
    #[schema(value_type = String, format = DateTime)]
    pub update_time: DateTime<Utc>,
}

pub(super) fn server_view(s: ServerRow, zone_name: &str) -> ServerView {
    ServerView {
        id: s.id,
        cluster_id: s.cluster_id,
        zone_id: s.zone_id,
        zone_name: zone_name.to_string(),
        host_id: s.host_id,
        ip: s.ip,
        sql_port: s.sql_port,
        rpc_port: s.rpc_port,
        status: s.status,
        create_time: s.create_time,
        update_time: s.update_time,
    }
}

pub(super) fn cluster_view(
    c: ClusterRow,
    zones: Vec<ZoneRow>,
    servers: Vec<ServerRow>,
) -> ClusterView {
    let mut by_zone: HashMap<i64, Vec<ServerRow>> = HashMap::new();
    for s in servers {
        by_zone.entry(s.zone_id).or_default().push(s);
    }
    ClusterView {
        zones: zones
            .into_iter()
            .map(|z| ZoneView {
                servers: by_zone
                    .remove(&z.id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|s| server_view(s, &z.name))
                    .collect(),
                id: z.id,
                cluster_id: z.cluster_id,
                name: z.name,
                status: z.status,
                create_time: z.create_time,
                update_time: z.update_time,
            })
            .collect(),
        id: c.id,
        name: c.name,
        ob_cluster_id: c.ob_cluster_id,
        status: c.status,
        create_time: c.create_time,
        update_time: c.update_time,
    }
}

/// Renders clusters with their zones and servers in two more queries.
pub(super) async fn render_clusters(
    pool: &PgPool,
    clusters: Vec<ClusterRow>,
) -> Result<Vec<ClusterView>> {
    let ids: Vec<i64> = clusters.iter().map(|c| c.id).collect();
    let mut zones: HashMap<i64, Vec<ZoneRow>> = HashMap::new();
    for z in inventory::zones_of_clusters(pool, &ids).await? {
        zones.entry(z.cluster_id).or_default().push(z);
    }
    let mut servers: HashMap<i64, Vec<ServerRow>> = HashMap::new();
    for s in inventory::servers_of_clusters(pool, &ids).await? {
        servers.entry(s.cluster_id).or_default().push(s);
    }
    Ok(clusters
        .into_iter()
        .map(|c| {
            let z = zones.remove(&c.id).unwrap_or_default();
            let s = servers.remove(&c.id).unwrap_or_default();
            cluster_view(c, z, s)
        })
        .collect())
}
