//! SQL of the inventory: hosts and their agents, OceanBase clusters, zones and
//! servers, their statuses, and the joined view an operation needs of its
//! target.

use super::Result;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, PgExecutor, Row};

use crate::model::string_enum;

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

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HostRow {
    pub id: i64,
    pub name: String,
    pub ip: String,
    pub agent_url: String,
    #[sqlx(try_from = "String")]
    pub agent_status: AgentStatus,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

const HOST_COLUMNS: &str = "id, name, ip, agent_url, agent_status, create_time, update_time";

#[derive(Debug, Clone)]
pub struct NewHost {
    pub name: String,
    pub ip: String,
    pub agent_url: String,
    pub agent_status: AgentStatus,
}

pub async fn insert_host(ex: impl PgExecutor<'_>, h: &NewHost) -> Result<HostRow> {
    let sql = format!(
        "insert into host (name, ip, agent_url, agent_status) values ($1, $2, $3, $4) \
         returning {HOST_COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(&h.name)
        .bind(&h.ip)
        .bind(&h.agent_url)
        .bind(h.agent_status.as_str())
        .fetch_one(ex)
        .await?)
}

pub async fn find_host_by_name(ex: impl PgExecutor<'_>, name: &str) -> Result<Option<HostRow>> {
    let sql = format!("select {HOST_COLUMNS} from host where name = $1");
    Ok(sqlx::query_as(&sql).bind(name).fetch_optional(ex).await?)
}

pub async fn get_host(ex: impl PgExecutor<'_>, id: i64) -> Result<Option<HostRow>> {
    let sql = format!("select {HOST_COLUMNS} from host where id = $1");
    Ok(sqlx::query_as(&sql).bind(id).fetch_optional(ex).await?)
}

/// One page of hosts by id (page is 0-based) and the total count.
/// The hosts of `ids` that exist, in id order.
pub async fn get_hosts(ex: impl PgExecutor<'_>, ids: &[i64]) -> Result<Vec<HostRow>> {
    let sql = format!("select {HOST_COLUMNS} from host where id = any($1) order by id");
    Ok(sqlx::query_as(&sql).bind(ids).fetch_all(ex).await?)
}

pub async fn list_hosts(
    conn: &mut PgConnection,
    page: i64,
    size: i64,
) -> Result<(Vec<HostRow>, i64)> {
    let total: i64 = sqlx::query_scalar("select count(*) from host")
        .fetch_one(&mut *conn)
        .await?;
    let sql = format!("select {HOST_COLUMNS} from host order by id limit $1 offset $2");
    let rows = sqlx::query_as(&sql)
        .bind(size)
        .bind(page.saturating_mul(size))
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
    let done = sqlx::query(
        "update host set agent_status = $2, update_time = now() \
         where id = $1 and ($3::text is null or agent_status = $3)",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(expected.map(AgentStatus::as_str))
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

// ---------------------------------------------------------------- clusters

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClusterRow {
    pub id: i64,
    pub name: String,
    pub ob_cluster_id: i64,
    #[sqlx(try_from = "String")]
    pub status: ClusterStatus,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

const CLUSTER_COLUMNS: &str = "id, name, ob_cluster_id, status, create_time, update_time";

#[derive(Debug, Clone)]
pub struct NewCluster {
    pub name: String,
    pub ob_cluster_id: i64,
    pub status: ClusterStatus,
}

pub async fn insert_cluster(ex: impl PgExecutor<'_>, c: &NewCluster) -> Result<ClusterRow> {
    let sql = format!(
        "insert into ob_cluster (name, ob_cluster_id, status) values ($1, $2, $3) \
         returning {CLUSTER_COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(&c.name)
        .bind(c.ob_cluster_id)
        .bind(c.status.as_str())
        .fetch_one(ex)
        .await?)
}

pub async fn find_cluster_by_name(
    ex: impl PgExecutor<'_>,
    name: &str,
) -> Result<Option<ClusterRow>> {
    let sql = format!("select {CLUSTER_COLUMNS} from ob_cluster where name = $1");
    Ok(sqlx::query_as(&sql).bind(name).fetch_optional(ex).await?)
}

pub async fn get_cluster(ex: impl PgExecutor<'_>, id: i64) -> Result<Option<ClusterRow>> {
    let sql = format!("select {CLUSTER_COLUMNS} from ob_cluster where id = $1");
    Ok(sqlx::query_as(&sql).bind(id).fetch_optional(ex).await?)
}

/// The clusters with these ids (those that exist), by id.
pub async fn get_clusters(ex: impl PgExecutor<'_>, ids: &[i64]) -> Result<Vec<ClusterRow>> {
    let sql = format!("select {CLUSTER_COLUMNS} from ob_cluster where id = any($1) order by id");
    Ok(sqlx::query_as(&sql).bind(ids).fetch_all(ex).await?)
}

/// One page of clusters by id (page is 0-based) and the total count.
pub async fn list_clusters(
    conn: &mut PgConnection,
    page: i64,
    size: i64,
) -> Result<(Vec<ClusterRow>, i64)> {
    let total: i64 = sqlx::query_scalar("select count(*) from ob_cluster")
        .fetch_one(&mut *conn)
        .await?;
    let sql = format!("select {CLUSTER_COLUMNS} from ob_cluster order by id limit $1 offset $2");
    let rows = sqlx::query_as(&sql)
        .bind(size)
        .bind(page.saturating_mul(size))
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
    let done = sqlx::query(
        "update ob_cluster set status = $2, update_time = now() \
         where id = $1 and ($3::text is null or status = $3)",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(expected.map(ClusterStatus::as_str))
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

// ---------------------------------------------------------------- zones

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ZoneRow {
    pub id: i64,
    pub cluster_id: i64,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub status: ZoneStatus,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

const ZONE_COLUMNS: &str = "id, cluster_id, name, status, create_time, update_time";

#[derive(Debug, Clone)]
pub struct NewZone {
    pub cluster_id: i64,
    pub name: String,
    pub status: ZoneStatus,
}

pub async fn insert_zone(ex: impl PgExecutor<'_>, z: &NewZone) -> Result<ZoneRow> {
    let sql = format!(
        "insert into ob_zone (cluster_id, name, status) values ($1, $2, $3) \
         returning {ZONE_COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(z.cluster_id)
        .bind(&z.name)
        .bind(z.status.as_str())
        .fetch_one(ex)
        .await?)
}

pub async fn get_zone(ex: impl PgExecutor<'_>, id: i64) -> Result<Option<ZoneRow>> {
    let sql = format!("select {ZONE_COLUMNS} from ob_zone where id = $1");
    Ok(sqlx::query_as(&sql).bind(id).fetch_optional(ex).await?)
}

/// Zones of these clusters, by cluster then name.
pub async fn zones_of_clusters(ex: impl PgExecutor<'_>, clusters: &[i64]) -> Result<Vec<ZoneRow>> {
    let sql = format!(
        "select {ZONE_COLUMNS} from ob_zone where cluster_id = any($1) order by cluster_id, name"
    );
    Ok(sqlx::query_as(&sql).bind(clusters).fetch_all(ex).await?)
}

/// Sets a zone's status; with `expected`, only when the status is that now.
/// False when no row changed.
pub async fn set_zone_status(
    ex: impl PgExecutor<'_>,
    id: i64,
    status: ZoneStatus,
    expected: Option<ZoneStatus>,
) -> Result<bool> {
    let done = sqlx::query(
        "update ob_zone set status = $2, update_time = now() \
         where id = $1 and ($3::text is null or status = $3)",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(expected.map(ZoneStatus::as_str))
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

// ---------------------------------------------------------------- servers

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ServerRow {
    pub id: i64,
    pub cluster_id: i64,
    pub zone_id: i64,
    pub host_id: i64,
    pub ip: String,
    pub sql_port: i32,
    pub rpc_port: i32,
    #[sqlx(try_from = "String")]
    pub status: ServerStatus,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

const SERVER_COLUMNS: &str =
    "id, cluster_id, zone_id, host_id, ip, sql_port, rpc_port, status, create_time, update_time";

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
    let sql = format!(
        "insert into ob_server (cluster_id, zone_id, host_id, ip, sql_port, rpc_port, status) \
         values ($1, $2, $3, $4, $5, $6, $7) \
         returning {SERVER_COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(s.cluster_id)
        .bind(s.zone_id)
        .bind(s.host_id)
        .bind(&s.ip)
        .bind(s.sql_port)
        .bind(s.rpc_port)
        .bind(s.status.as_str())
        .fetch_one(ex)
        .await?)
}

/// Every server of a cluster, by id.
pub async fn servers_of_cluster(ex: impl PgExecutor<'_>, cluster: i64) -> Result<Vec<ServerRow>> {
    let sql = format!("select {SERVER_COLUMNS} from ob_server where cluster_id = $1 order by id");
    Ok(sqlx::query_as(&sql).bind(cluster).fetch_all(ex).await?)
}

/// Every server of these clusters, by cluster then id.
pub async fn servers_of_clusters(
    ex: impl PgExecutor<'_>,
    clusters: &[i64],
) -> Result<Vec<ServerRow>> {
    let sql = format!(
        "select {SERVER_COLUMNS} from ob_server where cluster_id = any($1) order by cluster_id, id"
    );
    Ok(sqlx::query_as(&sql).bind(clusters).fetch_all(ex).await?)
}

/// Every server of a zone, by id.
pub async fn servers_of_zone(ex: impl PgExecutor<'_>, zone: i64) -> Result<Vec<ServerRow>> {
    let sql = format!("select {SERVER_COLUMNS} from ob_server where zone_id = $1 order by id");
    Ok(sqlx::query_as(&sql).bind(zone).fetch_all(ex).await?)
}

/// Sets a server's status; with `expected`, only when the status is that
/// now. False when no row changed.
pub async fn set_server_status(
    ex: impl PgExecutor<'_>,
    id: i64,
    status: ServerStatus,
    expected: Option<ServerStatus>,
) -> Result<bool> {
    let done = sqlx::query(
        "update ob_server set status = $2, update_time = now() \
         where id = $1 and ($3::text is null or status = $3)",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(expected.map(ServerStatus::as_str))
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

// ---------------------------------------------------------------- joined

/// A server with its zone, cluster and host: what an operation on it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTarget {
    pub server: ServerRow,
    pub zone: ZoneRow,
    pub cluster: ClusterRow,
    pub host: HostRow,
}

fn decode_status<T: TryFrom<String, Error = String>>(row: &PgRow, col: &str) -> sqlx::Result<T> {
    let s: String = row.try_get(col)?;
    T::try_from(s).map_err(|e| sqlx::Error::ColumnDecode {
        index: col.to_string(),
        source: e.into(),
    })
}

impl<'r> FromRow<'r, PgRow> for ServerTarget {
    fn from_row(r: &'r PgRow) -> sqlx::Result<Self> {
        Ok(ServerTarget {
            server: ServerRow {
                id: r.try_get("s_id")?,
                cluster_id: r.try_get("s_cluster_id")?,
                zone_id: r.try_get("s_zone_id")?,
                host_id: r.try_get("s_host_id")?,
                ip: r.try_get("s_ip")?,
                sql_port: r.try_get("s_sql_port")?,
                rpc_port: r.try_get("s_rpc_port")?,
                status: decode_status(r, "s_status")?,
                create_time: r.try_get("s_create_time")?,
                update_time: r.try_get("s_update_time")?,
            },
            zone: ZoneRow {
                id: r.try_get("z_id")?,
                cluster_id: r.try_get("z_cluster_id")?,
                name: r.try_get("z_name")?,
                status: decode_status(r, "z_status")?,
                create_time: r.try_get("z_create_time")?,
                update_time: r.try_get("z_update_time")?,
            },
            cluster: ClusterRow {
                id: r.try_get("c_id")?,
                name: r.try_get("c_name")?,
                ob_cluster_id: r.try_get("c_ob_cluster_id")?,
                status: decode_status(r, "c_status")?,
                create_time: r.try_get("c_create_time")?,
                update_time: r.try_get("c_update_time")?,
            },
            host: HostRow {
                id: r.try_get("h_id")?,
                name: r.try_get("h_name")?,
                ip: r.try_get("h_ip")?,
                agent_url: r.try_get("h_agent_url")?,
                agent_status: decode_status(r, "h_agent_status")?,
                create_time: r.try_get("h_create_time")?,
                update_time: r.try_get("h_update_time")?,
            },
        })
    }
}

/// A server with its zone, cluster and host, in one query.
pub async fn get_server_target(
    ex: impl PgExecutor<'_>,
    server: i64,
) -> Result<Option<ServerTarget>> {
    Ok(sqlx::query_as(
        "select s.id as s_id, s.cluster_id as s_cluster_id, s.zone_id as s_zone_id, \
             s.host_id as s_host_id, s.ip as s_ip, s.sql_port as s_sql_port, \
             s.rpc_port as s_rpc_port, s.status as s_status, s.create_time as s_create_time, \
             s.update_time as s_update_time, \
             z.id as z_id, z.cluster_id as z_cluster_id, z.name as z_name, z.status as z_status, \
             z.create_time as z_create_time, z.update_time as z_update_time, \
             c.id as c_id, c.name as c_name, c.ob_cluster_id as c_ob_cluster_id, \
             c.status as c_status, c.create_time as c_create_time, \
             c.update_time as c_update_time, \
             h.id as h_id, h.name as h_name, h.ip as h_ip, h.agent_url as h_agent_url, \
             h.agent_status as h_agent_status, h.create_time as h_create_time, \
             h.update_time as h_update_time \
         from ob_server s \
         join ob_zone z on z.id = s.zone_id \
         join ob_cluster c on c.id = s.cluster_id \
         join host h on h.id = s.host_id \
         where s.id = $1",
    )
    .bind(server)
    .fetch_optional(ex)
    .await?)
}

/// Points a host at its agent's URL and marks the agent ONLINE (the demo's
/// agents listen somewhere new on each start).
/// Moves a host, and the servers on it, to another IP address (the demo's
/// `--host-ip`), in one statement.
pub async fn set_host_address(ex: impl PgExecutor<'_>, id: i64, ip: &str) -> Result<()> {
    sqlx::query(
        "with h as (update host set ip = $2, update_time = now() where id = $1) \
         update ob_server set ip = $2, update_time = now() where host_id = $1",
    )
    .bind(id)
    .bind(ip)
    .execute(ex)
    .await?;
    Ok(())
}

pub async fn set_host_agent_online(
    ex: impl PgExecutor<'_>,
    id: i64,
    agent_url: &str,
) -> Result<()> {
    sqlx::query("update host set agent_url = $2, agent_status = 'ONLINE' where id = $1")
        .bind(id)
        .bind(agent_url)
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
    Ok(sqlx::query_scalar(
        "select 'host:' || id from host union all select 'server:' || id from ob_server",
    )
    .fetch_all(ex)
    .await?)
}

/// Every server, by cluster then id.
pub async fn all_servers(ex: impl PgExecutor<'_>) -> Result<Vec<ServerRow>> {
    let sql = format!("select {SERVER_COLUMNS} from ob_server order by cluster_id, id");
    Ok(sqlx::query_as(&sql).fetch_all(ex).await?)
}
