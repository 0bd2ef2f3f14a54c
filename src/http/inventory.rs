//! The inventory over HTTP: add and read hosts, add a cluster with its zones
//! and servers in one transaction, read clusters and their servers. Bodies
//! and their validation are in [`bodies`] (duplicates are 409s naming the
//! field), the answers in [`views`].

use super::envelope::{Envelope, ErrorEnvelope, Paged, Success};
use super::error::{code, Error, Result};
use super::extract::{positive_id, ApiJson, ApiPath, ApiQuery, Validate};
use super::tasks::page_params;
use super::AppState;
use crate::auth::{Permission, RequireExt};
use crate::store::inventory::{
    self, ClusterStatus, NewCluster, NewServer, NewZone, ServerStatus, ZoneStatus,
};
use axum::extract::State;
use serde::Deserialize;
use std::collections::HashMap;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

mod bodies;
mod views;

use bodies::duplicate;
pub use bodies::{CreateCluster, CreateHost, CreateServer, CreateZone};
use views::{cluster_view, render_clusters, server_view};
pub use views::{ClusterView, HostView, ServerView, ZoneView};

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
