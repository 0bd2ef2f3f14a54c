//! The inventory over HTTP: add and read hosts, add a cluster with its zones
//! and servers in one transaction, read clusters and their servers. Bodies
//! are validated field by field; duplicates are 409s naming the field.

use super::envelope::{ser_time, Envelope, ErrorEnvelope, Paged, Success};
use super::error::{code, Error, Result, SubError};
use super::extract::{positive_id, ApiJson, ApiPath, ApiQuery, Validate};
use super::tasks::page_params;
use super::AppState;
use crate::auth::{Permission, RequireExt};
use crate::store;
use crate::store::inventory::{
    self, AgentStatus, ClusterRow, ClusterStatus, HostRow, NewCluster, NewHost, NewServer, NewZone,
    ServerRow, ServerStatus, ZoneRow, ZoneStatus,
};
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::collections::HashMap;
use std::net::IpAddr;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

/// Longest name of a host, cluster or zone.
pub const NAME_MAX: usize = 128;

/// Reads are open to every authenticated user; writes need ADMIN.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    let read = Permission::InventoryRead;
    let write = Permission::InventoryWrite;
    OpenApiRouter::new()
        .routes(routes!(list_hosts).require(read))
        .routes(routes!(create_host).require(write))
        .routes(routes!(get_host).require(read))
        .routes(routes!(list_clusters).require(read))
        .routes(routes!(create_cluster).require(write))
        .routes(routes!(get_cluster).require(read))
        .routes(routes!(list_servers).require(read))
}

// ---------------------------------------------------------------- bodies

/// A host to add.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateHost {
    /// Unique name, 1 to 128 characters.
    #[schema(min_length = 1, max_length = 128, pattern = r"^\S([\s\S]*\S)?$")]
    pub name: String,
    /// IPv4 address (IPv6 is accepted too).
    #[schema(format = Ipv4)]
    pub ip: String,
    /// Base URL of the host's agent (http or https), e.g. `http://10.0.0.5:62888`.
    #[schema(
        pattern = r"^[hH][tT][tT][pP][sS]?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$"
    )]
    pub agent_url: String,
    /// Known agent state (default UNKNOWN).
    #[serde(default)]
    pub agent_status: Option<AgentStatus>,
}

/// A cluster to add, with its zones and their servers.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateCluster {
    /// Unique name, 1 to 128 characters.
    #[schema(min_length = 1, max_length = 128, pattern = r"^\S([\s\S]*\S)?$")]
    pub name: String,
    /// The cluster id OceanBase knows (positive).
    #[schema(minimum = 1)]
    pub ob_cluster_id: i64,
    /// Default RUNNING.
    #[serde(default)]
    pub status: Option<ClusterStatus>,
    #[serde(default)]
    pub zones: Vec<CreateZone>,
}

/// A zone of a cluster to add.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateZone {
    /// Name, unique within the cluster, 1 to 128 characters.
    #[schema(min_length = 1, max_length = 128, pattern = r"^\S([\s\S]*\S)?$")]
    pub name: String,
    /// Default RUNNING.
    #[serde(default)]
    pub status: Option<ZoneStatus>,
    #[serde(default)]
    pub servers: Vec<CreateServer>,
}

/// A server of a zone to add, on an existing host.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateServer {
    /// An existing host.
    #[schema(minimum = 1)]
    pub host_id: i64,
    /// Default: the host's IP.
    #[serde(default)]
    #[schema(format = Ipv4)]
    pub ip: Option<String>,
    /// 1 to 65535, default 2881; unique per host.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    pub sql_port: Option<i64>,
    /// 1 to 65535, default 2882; unique per host, not sqlPort.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    pub rpc_port: Option<i64>,
    /// Default RUNNING.
    #[serde(default)]
    pub status: Option<ServerStatus>,
}

// ---------------------------------------------------------------- views

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

fn server_view(s: ServerRow, zone_name: &str) -> ServerView {
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

fn cluster_view(c: ClusterRow, zones: Vec<ZoneRow>, servers: Vec<ServerRow>) -> ClusterView {
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
async fn render_clusters(pool: &PgPool, clusters: Vec<ClusterRow>) -> Result<Vec<ClusterView>> {
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

// ---------------------------------------------------------------- validation

/// Collects every invalid field of a body before answering.
#[derive(Default)]
struct Check(Vec<SubError>);

impl Check {
    fn fail(&mut self, field: &str, rejected: impl Into<serde_json::Value>, message: &str) {
        self.0.push(SubError {
            object: "body".into(),
            field: field.into(),
            rejected_value: rejected.into(),
            message: message.into(),
        });
    }

    fn name(&mut self, field: &str, value: &str) {
        if value.trim().is_empty() {
            self.fail(field, value, "must not be empty");
        } else if value.chars().count() > NAME_MAX {
            self.fail(field, value, "must be at most 128 characters long");
        } else if value.trim() != value {
            self.fail(field, value, "must not start or end with spaces");
        }
    }

    fn ip(&mut self, field: &str, value: &str) {
        if value.parse::<IpAddr>().is_err() {
            self.fail(field, value, "must be an IPv4 or IPv6 address");
        }
    }

    fn port(&mut self, field: &str, value: i64) {
        if !(1..=65535).contains(&value) {
            self.fail(field, value, "must be a port between 1 and 65535");
        }
    }

    fn finish(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid_fields(self.0))
        }
    }
}

/// The agent URL as stored: http(s), with a host, no query or fragment, no
/// trailing slash.
fn agent_url(check: &mut Check, value: &str) -> String {
    match url::Url::parse(value) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty())
                && u.query().is_none()
                && u.fragment().is_none()
                && u.username().is_empty() =>
        {
            u.as_str().trim_end_matches('/').to_string()
        }
        _ => {
            check.fail(
                "agentUrl",
                value,
                "must be an http or https URL with a host, without credentials, query or fragment",
            );
            String::new()
        }
    }
}

impl CreateHost {
    fn check(&self) -> Result<NewHost> {
        let mut c = Check::default();
        c.name("name", &self.name);
        c.ip("ip", &self.ip);
        let agent_url = agent_url(&mut c, &self.agent_url);
        c.finish()?;
        Ok(NewHost {
            name: self.name.clone(),
            ip: self.ip.clone(),
            agent_url,
            agent_status: self.agent_status.unwrap_or(AgentStatus::Unknown),
        })
    }
}

impl CreateCluster {
    fn check(&self) -> Result<()> {
        let mut c = Check::default();
        c.name("name", &self.name);
        if self.ob_cluster_id < 1 {
            c.fail(
                "obClusterId",
                self.ob_cluster_id,
                "must be a positive integer",
            );
        }
        for (i, z) in self.zones.iter().enumerate() {
            c.name(&format!("zones[{i}].name"), &z.name);
            for (j, s) in z.servers.iter().enumerate() {
                let f = |name: &str| format!("zones[{i}].servers[{j}].{name}");
                if s.host_id < 1 {
                    c.fail(&f("hostId"), s.host_id, "must be a positive integer id");
                }
                if let Some(ip) = &s.ip {
                    c.ip(&f("ip"), ip);
                }
                let sql = s.sql_port.unwrap_or(2881);
                let rpc = s.rpc_port.unwrap_or(2882);
                c.port(&f("sqlPort"), sql);
                c.port(&f("rpcPort"), rpc);
                if sql == rpc {
                    c.fail(&f("rpcPort"), rpc, "must differ from sqlPort");
                }
            }
        }
        c.finish()
    }
}

/// A unique violation as a 409 naming the field; anything else as is.
fn duplicate(e: store::Error, field: &str, what: &str) -> Error {
    if e.unique_violation().is_some() {
        Error::refused(
            StatusCode::CONFLICT,
            code::DUPLICATE,
            format!("{what} already exists"),
        )
        .with_target(field)
    } else {
        e.into()
    }
}

// ---------------------------------------------------------------- params

/// `{id}` of a host or cluster.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdPath {
    /// The id.
    #[param(minimum = 1)]
    pub id: i64,
}

impl Validate for IdPath {
    fn validate(&self) -> Result<()> {
        positive_id("id", self.id).map(drop)
    }
}

/// Page of a list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page number, from 1 (default 1).
    #[param(minimum = 1)]
    pub page: Option<i64>,
    /// Page size, 1 to 2000 (default 10).
    #[param(minimum = 1, maximum = 2000)]
    pub size: Option<i64>,
}

// ---------------------------------------------------------------- handlers

/// Add a host.
#[utoipa::path(
    post,
    path = "/api/v2/compute/hosts",
    tag = "inventory",
    request_body = CreateHost,
    responses(
        (status = 200, description = "The new host", body = Envelope<HostView>),
        (status = 400, description = "An invalid field (named) or malformed JSON", body = ErrorEnvelope),
        (status = 409, description = "A host with this name exists (DUPLICATE)", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than 1 MiB", body = ErrorEnvelope),
        (status = 415, description = "The body is not application/json", body = ErrorEnvelope),
    )
)]
pub async fn create_host(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateHost>,
) -> Result<Success<HostView>> {
    let new = body.check()?;
    let row = inventory::insert_host(&state.pool, &new)
        .await
        .map_err(|e| duplicate(e, "name", &format!("host {:?}", new.name)))?;
    tracing::info!(host_id = row.id, name = %row.name, "host added");
    Ok(Success(row.into()))
}

/// List hosts by id.
#[utoipa::path(
    get,
    path = "/api/v2/compute/hosts",
    tag = "inventory",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of hosts", body = Envelope<Paged<HostView>>),
        (status = 400, description = "A bad page or size", body = ErrorEnvelope),
    )
)]
pub async fn list_hosts(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Success<Paged<HostView>>> {
    let (page, size) = page_params(q.page, q.size)?;
    let mut conn = state.pool.acquire().await?;
    let (rows, total) = inventory::list_hosts(&mut conn, page - 1, size).await?;
    let views = rows.into_iter().map(HostView::from).collect();
    Ok(Success(Paged::new(views, total, page, size)))
}

/// One host.
#[utoipa::path(
    get,
    path = "/api/v2/compute/hosts/{id}",
    tag = "inventory",
    params(IdPath),
    responses(
        (status = 200, description = "The host", body = Envelope<HostView>),
        (status = 400, description = "A bad id", body = ErrorEnvelope),
        (status = 404, description = "No such host (HOST_NOT_FOUND)", body = ErrorEnvelope),
    )
)]
pub async fn get_host(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<IdPath>,
) -> Result<Success<HostView>> {
    let host = inventory::get_host(&state.pool, p.id)
        .await?
        .ok_or_else(|| {
            Error::not_found(
                code::HOST_NOT_FOUND,
                format!("host {} does not exist", p.id),
            )
        })?;
    Ok(Success(host.into()))
}

/// Add a cluster with its zones and servers, in one transaction.
#[utoipa::path(
    post,
    path = "/api/v2/ob/clusters",
    tag = "inventory",
    request_body = CreateCluster,
    responses(
        (status = 200, description = "The new cluster with its zones and servers", body = Envelope<ClusterView>),
        (status = 400, description = "An invalid field (named), a missing host, or malformed JSON", body = ErrorEnvelope),
        (status = 409, description = "A duplicate cluster name, zone name or server port (DUPLICATE)", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than 1 MiB", body = ErrorEnvelope),
        (status = 415, description = "The body is not application/json", body = ErrorEnvelope),
    )
)]
pub async fn create_cluster(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateCluster>,
) -> Result<Success<ClusterView>> {
    body.check()?;
    let mut tx = state.pool.begin().await?;
    let cluster = inventory::insert_cluster(
        &mut *tx,
        &NewCluster {
            name: body.name.clone(),
            ob_cluster_id: body.ob_cluster_id,
            status: body.status.unwrap_or(ClusterStatus::Running),
        },
    )
    .await
    .map_err(|e| duplicate(e, "name", &format!("cluster {:?}", body.name)))?;
    let mut zones = Vec::with_capacity(body.zones.len());
    let mut servers = Vec::new();
    for (i, z) in body.zones.iter().enumerate() {
        let zone = inventory::insert_zone(
            &mut *tx,
            &NewZone {
                cluster_id: cluster.id,
                name: z.name.clone(),
                status: z.status.unwrap_or(ZoneStatus::Running),
            },
        )
        .await
        .map_err(|e| {
            duplicate(
                e,
                &format!("zones[{i}].name"),
                &format!("zone {:?}", z.name),
            )
        })?;
        for (j, s) in z.servers.iter().enumerate() {
            let field = format!("zones[{i}].servers[{j}]");
            let host = inventory::get_host(&mut *tx, s.host_id)
                .await?
                .ok_or_else(|| {
                    Error::invalid(
                        "body",
                        &format!("{field}.hostId"),
                        s.host_id,
                        "no host has this id",
                    )
                })?;
            // Ports were checked to be 1..=65535 above.
            let new = NewServer {
                cluster_id: cluster.id,
                zone_id: zone.id,
                host_id: host.id,
                ip: s.ip.clone().unwrap_or(host.ip),
                sql_port: s.sql_port.unwrap_or(2881) as i32,
                rpc_port: s.rpc_port.unwrap_or(2882) as i32,
                status: s.status.unwrap_or(ServerStatus::Running),
            };
            let row = inventory::insert_server(&mut *tx, &new)
                .await
                .map_err(|e| {
                    duplicate(
                        e,
                        &field,
                        &format!(
                            "a server on host {} with SQL port {} or RPC port {}",
                            new.host_id, new.sql_port, new.rpc_port
                        ),
                    )
                })?;
            servers.push(row);
        }
        zones.push(zone);
    }
    tx.commit().await?;
    tracing::info!(cluster_id = cluster.id, name = %cluster.name, zones = zones.len(),
        servers = servers.len(), "cluster added");
    Ok(Success(cluster_view(cluster, zones, servers)))
}

/// List clusters by id, with their zones and servers.
#[utoipa::path(
    get,
    path = "/api/v2/ob/clusters",
    tag = "inventory",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of clusters", body = Envelope<Paged<ClusterView>>),
        (status = 400, description = "A bad page or size", body = ErrorEnvelope),
    )
)]
pub async fn list_clusters(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Success<Paged<ClusterView>>> {
    let (page, size) = page_params(q.page, q.size)?;
    let mut conn = state.pool.acquire().await?;
    let (rows, total) = inventory::list_clusters(&mut conn, page - 1, size).await?;
    drop(conn);
    let views = render_clusters(&state.pool, rows).await?;
    Ok(Success(Paged::new(views, total, page, size)))
}

fn cluster_not_found(id: i64) -> Error {
    Error::not_found(
        code::CLUSTER_NOT_FOUND,
        format!("cluster {id} does not exist"),
    )
}

/// One cluster with its zones and servers.
#[utoipa::path(
    get,
    path = "/api/v2/ob/clusters/{id}",
    tag = "inventory",
    params(IdPath),
    responses(
        (status = 200, description = "The cluster", body = Envelope<ClusterView>),
        (status = 400, description = "A bad id", body = ErrorEnvelope),
        (status = 404, description = "No such cluster (CLUSTER_NOT_FOUND)", body = ErrorEnvelope),
    )
)]
pub async fn get_cluster(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<IdPath>,
) -> Result<Success<ClusterView>> {
    let cluster = inventory::get_cluster(&state.pool, p.id)
        .await?
        .ok_or_else(|| cluster_not_found(p.id))?;
    let view = render_clusters(&state.pool, vec![cluster])
        .await?
        .pop()
        .ok_or_else(|| cluster_not_found(p.id))?;
    Ok(Success(view))
}

/// The servers of a cluster, by id.
#[utoipa::path(
    get,
    path = "/api/v2/ob/clusters/{id}/servers",
    tag = "inventory",
    params(IdPath, PageQuery),
    responses(
        (status = 200, description = "One page of the cluster's servers", body = Envelope<Paged<ServerView>>),
        (status = 400, description = "A bad id, page or size", body = ErrorEnvelope),
        (status = 404, description = "No such cluster (CLUSTER_NOT_FOUND)", body = ErrorEnvelope),
    )
)]
pub async fn list_servers(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<IdPath>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Success<Paged<ServerView>>> {
    let (page, size) = page_params(q.page, q.size)?;
    if inventory::get_cluster(&state.pool, p.id).await?.is_none() {
        return Err(cluster_not_found(p.id));
    }
    let zones: HashMap<i64, String> = inventory::zones_of_clusters(&state.pool, &[p.id])
        .await?
        .into_iter()
        .map(|z| (z.id, z.name))
        .collect();
    let all = inventory::servers_of_cluster(&state.pool, p.id).await?;
    let total = all.len() as i64;
    let skip = usize::try_from((page - 1).saturating_mul(size)).unwrap_or(usize::MAX);
    let views = all
        .into_iter()
        .skip(skip)
        .take(size as usize)
        .map(|s| {
            let zone = zones.get(&s.zone_id).cloned().unwrap_or_default();
            server_view(s, &zone)
        })
        .collect();
    Ok(Success(Paged::new(views, total, page, size)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_urls_are_checked_and_normalized() {
        let mut c = Check::default();
        assert_eq!(
            agent_url(&mut c, "http://10.0.0.5:62888/"),
            "http://10.0.0.5:62888"
        );
        assert_eq!(
            agent_url(&mut c, "https://agent.example/base"),
            "https://agent.example/base"
        );
        assert!(c.0.is_empty());
        for bad in [
            "",
            "10.0.0.5:62888",
            "ftp://x",
            "http://",
            "http://u:p@h",
            "http://h/?q=1",
        ] {
            let mut c = Check::default();
            agent_url(&mut c, bad);
            assert_eq!(c.0.len(), 1, "{bad}");
        }
    }

    #[test]
    fn cluster_bodies_name_every_bad_field() {
        let body: CreateCluster = serde_json::from_value(serde_json::json!({
            "name": " ", "obClusterId": 0,
            "zones": [{"name": "z1", "servers": [{"hostId": 1, "sqlPort": 0, "rpcPort": 70000}]}]
        }))
        .expect("valid shape");
        let Err(Error::Refused(r)) = body.check() else {
            panic!("must be refused");
        };
        let fields: Vec<&str> = r.sub_errors.iter().map(|s| s.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "obClusterId",
                "zones[0].servers[0].sqlPort",
                "zones[0].servers[0].rpcPort"
            ]
        );
        assert_eq!(r.target.as_deref(), Some("name"));
    }
}
