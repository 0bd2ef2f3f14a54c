//! SQL of the inventory: hosts and their agents, OceanBase clusters, zones and
//! servers, their statuses, and (in `target`) the joined view an operation
//! needs of its target.

use super::Result;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

use crate::model::string_enum;

mod target;

pub use target::{get_server_target, ServerTarget};

string_enum!(
    /// Last known state of a host's agent.
    AgentStatus {
        Online => "ONLINE",
        Offline => "OFFLINE",
        Restarting => "RESTARTING",
        Unknown => "UNKNOWN",
    }
);

string_enum!(
    /// State of an OceanBase cluster.
    ClusterStatus {
        Running => "RUNNING",
        Creating => "CREATING",
        Operating => "OPERATING",
        Stopped => "STOPPED",
        Abnormal => "ABNORMAL",
        Deleting => "DELETING",
    }
);

string_enum!(
    /// State of a zone.
    ZoneStatus {
        Running => "RUNNING",
        Operating => "OPERATING",
        Stopped => "STOPPED",
    }
);

string_enum!(
    /// State of an OBServer.
    ServerStatus {
        Running => "RUNNING",
        Starting => "STARTING",
        Stopping => "STOPPING",
        Stopped => "STOPPED",
        Restarting => "RESTARTING",
        Abnormal => "ABNORMAL",
    }
);

// ---------------------------------------------------------------- hosts

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRow {
    pub id: i64,
    pub name: String,
    pub ip: String,
    pub agent_url: String,
    pub agent_status: AgentStatus,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewHost {
    pub name: String,
    pub ip: String,
    pub agent_url: String,
    pub agent_status: AgentStatus,
}

pub async fn insert_host(ex: impl PgExecutor<'_>, h: &NewHost) -> Result<HostRow> {
    Ok(sqlx::query_as!(
        HostRow,
        r#"insert into host (name, ip, agent_url, agent_status) values ($1, $2, $3, $4)
           returning id, name, ip, agent_url, agent_status as "agent_status: AgentStatus",
               create_time, update_time"#,
        h.name,
        h.ip,
        h.agent_url,
        h.agent_status.as_str(),
    )
    .fetch_one(ex)
    .await?)
}

pub async fn find_host_by_name(ex: impl PgExecutor<'_>, name: &str) -> Result<Option<HostRow>> {
    Ok(sqlx::query_as!(
        HostRow,
        r#"select id, name, ip, agent_url, agent_status as "agent_status: AgentStatus",
               create_time, update_time
           from host where name = $1"#,
        name,
    )
    .fetch_optional(ex)
    .await?)
}

pub async fn get_host(ex: impl PgExecutor<'_>, id: i64) -> Result<Option<HostRow>> {
    Ok(sqlx::query_as!(
        HostRow,
        r#"select id, name, ip, agent_url, agent_status as "agent_status: AgentStatus",
               create_time, update_time
           from host where id = $1"#,
        id,
    )
    .fetch_optional(ex)
    .await?)
}

/// The hosts of `ids` that exist, in id order.
pub async fn get_hosts(ex: impl PgExecutor<'_>, ids: &[i64]) -> Result<Vec<HostRow>> {
    Ok(sqlx::query_as!(
        HostRow,
        r#"select id, name, ip, agent_url, agent_status as "agent_status: AgentStatus",
               create_time, update_time
           from host where id = any($1) order by id"#,
        ids,
    )
    .fetch_all(ex)
    .await?)
}

/// One page of hosts by id (page is 0-based) and the total count.
pub async fn list_hosts(
    conn: &mut PgConnection,
    page: i64,
    size: i64,
) -> Result<(Vec<HostRow>, i64)> {
    let total = sqlx::query_scalar!(r#"select count(*) as "n!" from host"#)
        .fetch_one(&mut *conn)
        .await?;
    let rows = sqlx::query_as!(
        HostRow,
        r#"select id, name, ip, agent_url, agent_status as "agent_status: AgentStatus",
               create_time, update_time
           from host order by id limit $1 offset $2"#,
        size,
        page.saturating_mul(size),
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok((rows, total))
}

/// Sets a host's agent status; with `expected`, only when the status is that
/// now. False when no row changed (no such host, or another status).
pub async fn set_host_agent_status(
    ex: impl PgExecutor<'_>,
    id: i64,
    status: AgentStatus,
    expected: Option<AgentStatus>,
) -> Result<bool> {
    let done = sqlx::query!(
        "update host set agent_status = $2, update_time = now()
         where id = $1 and ($3::text is null or agent_status = $3)",
        id,
        status.as_str(),
        expected.map(AgentStatus::as_str),
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

// ---------------------------------------------------------------- clusters

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRow {
    pub id: i64,
    pub name: String,
    pub ob_cluster_id: i64,
    pub status: ClusterStatus,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewCluster {
    pub name: String,
    pub ob_cluster_id: i64,
    pub status: ClusterStatus,
}

pub async fn insert_cluster(ex: impl PgExecutor<'_>, c: &NewCluster) -> Result<ClusterRow> {
    Ok(sqlx::query_as!(
        ClusterRow,
        r#"insert into ob_cluster (name, ob_cluster_id, status) values ($1, $2, $3)
           returning id, name, ob_cluster_id, status as "status: ClusterStatus",
               create_time, update_time"#,
        c.name,
        c.ob_cluster_id,
        c.status.as_str(),
    )
    .fetch_one(ex)
    .await?)
}

pub async fn find_cluster_by_name(
    ex: impl PgExecutor<'_>,
    name: &str,
) -> Result<Option<ClusterRow>> {
    Ok(sqlx::query_as!(
        ClusterRow,
        r#"select id, name, ob_cluster_id, status as "status: ClusterStatus",
               create_time, update_time
           from ob_cluster where name = $1"#,
        name,
    )
    .fetch_optional(ex)
    .await?)
}

pub async fn get_cluster(ex: impl PgExecutor<'_>, id: i64) -> Result<Option<ClusterRow>> {
    Ok(sqlx::query_as!(
        ClusterRow,
        r#"select id, name, ob_cluster_id, status as "status: ClusterStatus",
               create_time, update_time
           from ob_cluster where id = $1"#,
        id,
    )
    .fetch_optional(ex)
    .await?)
}

/// The clusters with these ids (those that exist), by id.
pub async fn get_clusters(ex: impl PgExecutor<'_>, ids: &[i64]) -> Result<Vec<ClusterRow>> {
    Ok(sqlx::query_as!(
        ClusterRow,
        r#"select id, name, ob_cluster_id, status as "status: ClusterStatus",
               create_time, update_time
           from ob_cluster where id = any($1) order by id"#,
        ids,
    )
    .fetch_all(ex)
    .await?)
}

/// One page of clusters by id (page is 0-based) and the total count.
pub async fn list_clusters(
    conn: &mut PgConnection,
    page: i64,
    size: i64,
) -> Result<(Vec<ClusterRow>, i64)> {
    let total = sqlx::query_scalar!(r#"select count(*) as "n!" from ob_cluster"#)
        .fetch_one(&mut *conn)
        .await?;
    let rows = sqlx::query_as!(
        ClusterRow,
        r#"select id, name, ob_cluster_id, status as "status: ClusterStatus",
               create_time, update_time
           from ob_cluster order by id limit $1 offset $2"#,
        size,
        page.saturating_mul(size),
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok((rows, total))
}

/// Sets a cluster's status; with `expected`, only when the status is that
/// now. False when no row changed.
pub async fn set_cluster_status(
    ex: impl PgExecutor<'_>,
    id: i64,
    status: ClusterStatus,
    expected: Option<ClusterStatus>,
) -> Result<bool> {
    let done = sqlx::query!(
        "update ob_cluster set status = $2, update_time = now()
         where id = $1 and ($3::text is null or status = $3)",
        id,
        status.as_str(),
        expected.map(ClusterStatus::as_str),
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

// ---------------------------------------------------------------- zones

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneRow {
    pub id: i64,
    pub cluster_id: i64,
    pub name: String,
    pub status: ZoneStatus,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewZone {
    pub cluster_id: i64,
    pub name: String,
    pub status: ZoneStatus,
}

pub async fn insert_zone(ex: impl PgExecutor<'_>, z: &NewZone) -> Result<ZoneRow> {
    Ok(sqlx::query_as!(
        ZoneRow,
        r#"insert into ob_zone (cluster_id, name, status) values ($1, $2, $3)
           returning id, cluster_id, name, status as "status: ZoneStatus",
               create_time, update_time"#,
        z.cluster_id,
        z.name,
        z.status.as_str(),
    )
    .fetch_one(ex)
    .await?)
}

pub async fn get_zone(ex: impl PgExecutor<'_>, id: i64) -> Result<Option<ZoneRow>> {
    Ok(sqlx::query_as!(
        ZoneRow,
        r#"select id, cluster_id, name, status as "status: ZoneStatus", create_time, update_time
           from ob_zone where id = $1"#,
        id,
    )
    .fetch_optional(ex)
    .await?)
}

/// Zones of these clusters, by cluster then name.
pub async fn zones_of_clusters(ex: impl PgExecutor<'_>, clusters: &[i64]) -> Result<Vec<ZoneRow>> {
    Ok(sqlx::query_as!(
        ZoneRow,
        r#"select id, cluster_id, name, status as "status: ZoneStatus", create_time, update_time
           from ob_zone where cluster_id = any($1) order by cluster_id, name"#,
        clusters,
    )
    .fetch_all(ex)
    .await?)
}

/// Sets a zone's status; with `expected`, only when the status is that now.
/// False when no row changed.
pub async fn set_zone_status(
    ex: impl PgExecutor<'_>,
    id: i64,
    status: ZoneStatus,
    expected: Option<ZoneStatus>,
) -> Result<bool> {
    let done = sqlx::query!(
        "update ob_zone set status = $2, update_time = now()
         where id = $1 and ($3::text is null or status = $3)",
        id,
        status.as_str(),
        expected.map(ZoneStatus::as_str),
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

// ---------------------------------------------------------------- servers

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRow {
    pub id: i64,
    pub cluster_id: i64,
    pub zone_id: i64,
    pub host_id: i64,
    pub ip: String,
    pub sql_port: i32,
    pub rpc_port: i32,
    pub status: ServerStatus,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewServer {
    pub cluster_id: i64,
    pub zone_id: i64,
    pub host_id: i64,
    pub ip: String,
    pub sql_port: i32,
    pub rpc_port: i32,
    pub status: ServerStatus,
}

pub async fn insert_server(ex: impl PgExecutor<'_>, s: &NewServer) -> Result<ServerRow> {
    Ok(sqlx::query_as!(
        ServerRow,
        r#"insert into ob_server (cluster_id, zone_id, host_id, ip, sql_port, rpc_port, status)
           values ($1, $2, $3, $4, $5, $6, $7)
           returning id, cluster_id, zone_id, host_id, ip, sql_port, rpc_port,
               status as "status: ServerStatus", create_time, update_time"#,
        s.cluster_id,
        s.zone_id,
        s.host_id,
        s.ip,
        s.sql_port,
        s.rpc_port,
        s.status.as_str(),
    )
    .fetch_one(ex)
    .await?)
}

/// Every server of a cluster, by id.
pub async fn servers_of_cluster(ex: impl PgExecutor<'_>, cluster: i64) -> Result<Vec<ServerRow>> {
    Ok(sqlx::query_as!(
        ServerRow,
        r#"select id, cluster_id, zone_id, host_id, ip, sql_port, rpc_port,
               status as "status: ServerStatus", create_time, update_time
           from ob_server where cluster_id = $1 order by id"#,
        cluster,
    )
    .fetch_all(ex)
    .await?)
}

/// Every server of these clusters, by cluster then id.
pub async fn servers_of_clusters(
    ex: impl PgExecutor<'_>,
    clusters: &[i64],
) -> Result<Vec<ServerRow>> {
    Ok(sqlx::query_as!(
        ServerRow,
        r#"select id, cluster_id, zone_id, host_id, ip, sql_port, rpc_port,
               status as "status: ServerStatus", create_time, update_time
           from ob_server where cluster_id = any($1) order by cluster_id, id"#,
        clusters,
    )
    .fetch_all(ex)
    .await?)
}

/// Every server of a zone, by id.
pub async fn servers_of_zone(ex: impl PgExecutor<'_>, zone: i64) -> Result<Vec<ServerRow>> {
    Ok(sqlx::query_as!(
        ServerRow,
        r#"select id, cluster_id, zone_id, host_id, ip, sql_port, rpc_port,
               status as "status: ServerStatus", create_time, update_time
           from ob_server where zone_id = $1 order by id"#,
        zone,
    )
    .fetch_all(ex)
    .await?)
}

/// Sets a server's status; with `expected`, only when the status is that
/// now. False when no row changed.
pub async fn set_server_status(
    ex: impl PgExecutor<'_>,
    id: i64,
    status: ServerStatus,
    expected: Option<ServerStatus>,
) -> Result<bool> {
    let done = sqlx::query!(
        "update ob_server set status = $2, update_time = now()
         where id = $1 and ($3::text is null or status = $3)",
        id,
        status.as_str(),
        expected.map(ServerStatus::as_str),
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Moves a host, and the servers on it, to another IP address (the demo's
/// `--host-ip`), in one statement.
pub async fn set_host_address(ex: impl PgExecutor<'_>, id: i64, ip: &str) -> Result<()> {
    sqlx::query!(
        "with h as (update host set ip = $2, update_time = now() where id = $1)
         update ob_server set ip = $2, update_time = now() where host_id = $1",
        id,
        ip,
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// Points a host at its agent's URL and marks the agent ONLINE (the demo's
/// agents listen somewhere new on each start).
pub async fn set_host_agent_online(
    ex: impl PgExecutor<'_>,
    id: i64,
    agent_url: &str,
) -> Result<()> {
    sqlx::query!(
        "update host set agent_url = $2, agent_status = 'ONLINE' where id = $1",
        id,
        agent_url,
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// Sets the SQL and RPC ports of every server of a cluster (the demo's
/// observers listen where ports are free on each start).
pub async fn set_cluster_ports(
    ex: impl PgExecutor<'_>,
    cluster: i64,
    sql_port: i32,
    rpc_port: i32,
) -> Result<()> {
    sqlx::query(
        "update ob_server set sql_port = $2, rpc_port = $3, update_time = now() \
         where cluster_id = $1 and (sql_port, rpc_port) <> ($2, $3)",
    )
    .bind(cluster)
    .bind(sql_port)
    .bind(rpc_port)
    .execute(ex)
    .await?;
    Ok(())
}

/// The task target key of every host and server (`host:{id}`,
/// `server:{id}`).
pub async fn target_keys(ex: impl PgExecutor<'_>) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar!(
        r#"select 'host:' || id as "key!" from host
           union all select 'server:' || id from ob_server"#,
    )
    .fetch_all(ex)
    .await?)
}

/// Every server, by cluster then id.
pub async fn all_servers(ex: impl PgExecutor<'_>) -> Result<Vec<ServerRow>> {
    Ok(sqlx::query_as!(
        ServerRow,
        r#"select id, cluster_id, zone_id, host_id, ip, sql_port, rpc_port,
               status as "status: ServerStatus", create_time, update_time
           from ob_server order by cluster_id, id"#,
    )
    .fetch_all(ex)
    .await?)
}
