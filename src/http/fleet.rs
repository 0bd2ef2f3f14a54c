//! taskd's own operations over many servers or hosts, in OCP's style (paths
//! under OCP's prefixes, its envelope and task JSON): a rolling restart of a
//! cluster zone by zone, restart/start/stop of every server of one zone,
//! and an agent restart across many hosts, at most `parallelism` at once.
//!
//! Guards (a refused operation creates nothing): the cluster, zone, servers
//! and hosts must exist (404); every server must be in a state the seed
//! operation accepts (400 SERVER_STATE_INVALID naming it); no agent may be
//! RESTARTING (400 AGENT_STATE_INVALID). Exclusion is the database's (409
//! TARGET_BUSY naming the task that holds the target): a cluster or zone
//! task holds its cluster and each of its servers, so it excludes any task
//! on one of them and every other zone or cluster task of the cluster; an
//! agent batch holds each of its hosts.

use super::envelope::{Envelope, ErrorEnvelope, RequestCtx, Success};
use super::error::{code, Error, Result};
use super::extract::{
    check_json_content_type, parse_json, positive_id, ApiPath, ApiQuery, Caller, IdempotencyKey,
    Validate,
};
use super::ops::{replay, submit, ForceQuery, ServerOp, MAX_CONCURRENCY};
use super::tasks::TaskView;
use super::AppState;
use crate::auth::{Permission, RequireExt};
use crate::dag::rollout::{self, Rollout, HOST_IDS, SERVER_IDS, ZONE_IDS};
use crate::dag::templates::Template;
use crate::model::ocp::{key, status_key, Level, Phase};
use crate::model::{Context, TaskType};
use crate::store::inventory::{self, AgentStatus, ClusterRow, ServerRow, ZoneRow};
use crate::store::task::NewTask;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

/// Most hosts in one agent batch.
pub const MAX_BATCH_HOSTS: usize = 1000;

/// Zone and cluster operations need CLUSTER_MANAGER on the path's cluster,
/// the agent batch HOST_MANAGER (or ADMIN for both).
pub(crate) fn routes() -> Router<AppState> {
    const C: &str = "/api/v2/ob/clusters/{id}";
    let server = Permission::ServerOperate;
    let agent = Permission::AgentRestart;
    Router::new()
        .route(
            &format!("{C}/restart"),
            post(restart_cluster).require(server),
        )
        .route(
            &format!("{C}/zones/{{zoneName}}/restart"),
            post(restart_zone).require(server),
        )
        .route(
            &format!("{C}/zones/{{zoneName}}/start"),
            post(start_zone).require(server),
        )
        .route(
            &format!("{C}/zones/{{zoneName}}/stop"),
            post(stop_zone).require(server),
        )
        .route(
            "/compute/hosts/agent/restart",
            post(restart_agents).require(agent),
        )
        .route(
            "/api/v2/compute/hosts/agent/restart",
            post(restart_agents_v2).require(agent),
        )
}

// ---------------------------------------------------------------- params

/// `{id}` (cluster).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ClusterPath {
    /// Id of the cluster.
    pub id: i64,
}

impl Validate for ClusterPath {
    fn validate(&self) -> Result<()> {
        positive_id("id", self.id).map(drop)
    }
}

/// `{id}` (cluster) and `{zoneName}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ZonePath {
    /// Id of the cluster.
    pub id: i64,
    /// Name of the zone, in that cluster.
    #[serde(rename = "zoneName")]
    #[param(rename = "zoneName")]
    pub zone_name: String,
}

impl Validate for ZonePath {
    fn validate(&self) -> Result<()> {
        positive_id("id", self.id)?;
        if self.zone_name.trim().is_empty() || self.zone_name.len() > 128 {
            return Err(Error::invalid(
                "path",
                "zoneName",
                self.zone_name.clone(),
                "must be 1 to 128 characters",
            ));
        }
        Ok(())
    }
}

/// Optional body of a cluster restart: restrict it to some zones and/or
/// some servers (both given: the servers of those zones that are listed).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestartClusterBody {
    /// Zones to restart, in this order (default: every zone, in id order).
    #[serde(default)]
    pub zone_names: Option<Vec<String>>,
    /// Servers to restart (default: every server of the chosen zones).
    #[serde(default)]
    pub server_ids: Option<Vec<i64>>,
}

/// Body of an agent batch.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestartAgentsBody {
    /// Hosts whose agents to restart: 1 to 1000 distinct ids.
    pub host_ids: Vec<i64>,
    /// Most hosts restarted at once (the task's concurrency limit), 1 to
    /// 1000; default 10.
    #[serde(default)]
    pub parallelism: Option<i32>,
}

/// A JSON body that may be left out: no body at all (or only whitespace)
/// is `T::default()`; a body follows [`super::extract::ApiJson`]'s rules.
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        let headers = req.headers().clone();
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            let (status, code) = if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                (StatusCode::PAYLOAD_TOO_LARGE, code::PAYLOAD_TOO_LARGE)
            } else {
                (StatusCode::BAD_REQUEST, code::ILLEGAL_ARGUMENT)
            };
            Error::refused(status, code, format!("cannot read the request body: {rej}"))
                .with_target("body")
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        check_json_content_type(&headers)?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err(Error::invalid(
                "body",
                "body",
                serde_json::Value::Null,
                "must be a JSON object, not an array",
            ));
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

// ---------------------------------------------------------------- handlers

/// Restart a cluster zone by zone (taskd's extension).
#[utoipa::path(
    post,
    path = "/api/v2/ob/clusters/{id}/restart",
    tag = "operations",
    params(ClusterPath, ForceQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "At most 128 visible ASCII characters; a repeated key returns the first task"),
        ("X-Trace-Id" = Option<String>, Header, description = "Trace id to use (at most 64 of [A-Za-z0-9._-]); a new one otherwise")),
    request_body(content = Option<RestartClusterBody>, description = "Optional: restrict the restart to some zones or servers"),
    responses(
        (status = 200, description = "The new task, RUNNING: prepare the cluster, then each zone in turn (its servers in parallel, the seed restart steps each, then the zone's status), then sync cluster info and its status", body = Envelope<TaskView>),
        (status = 400, description = "A bad parameter, or a server's state refuses a restart (SERVER_STATE_INVALID)", body = ErrorEnvelope),
        (status = 404, description = "No such cluster, or a named zone or server is not in it", body = ErrorEnvelope),
        (status = 409, description = "The cluster, or one of its servers, is held by a RUNNING task (TARGET_BUSY, naming it)", body = ErrorEnvelope),
        (status = 422, description = "The Idempotency-Key was used for another operation (IDEMPOTENCY_KEY_REUSED)", body = ErrorEnvelope),
    )
)]
pub async fn restart_cluster(
    State(state): State<AppState>,
    ctx: RequestCtx,
    caller: Caller,
    key: IdempotencyKey,
    ApiPath(p): ApiPath<ClusterPath>,
    ApiQuery(q): ApiQuery<ForceQuery>,
    OptionalJson(body): OptionalJson<RestartClusterBody>,
) -> Result<Success<TaskView>> {
    let rollout = Rollout::ClusterRestart;
    let target_key = format!("cluster:{}", p.id);
    if let Some(first) = replay(&state, &key, rollout.task_name(), &target_key, Some(p.id)).await? {
        return Ok(Success(first));
    }
    let (cluster, zones, servers) = cluster_inventory(&state, p.id).await?;
    let parts = choose(&body, zones, servers)?;
    let op = ServerOp {
        template: Template::RestartObserver,
        force: q.force,
    };
    guard(op, &parts)?;
    let ids: Vec<(i64, &str)> = parts
        .iter()
        .map(|z| (z.zone.id, z.zone.name.as_str()))
        .collect();
    let nodes = rollout::cluster_restart(&ids);
    let task = multi_server_task(
        &state, &ctx, &caller, key, rollout, &cluster, &parts, op, target_key,
    );
    submit(&state, task, nodes).await
}

/// Restart every server of a zone (taskd's extension).
#[utoipa::path(
    post,
    path = "/api/v2/ob/clusters/{id}/zones/{zoneName}/restart",
    tag = "operations",
    params(ZonePath, ForceQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "At most 128 visible ASCII characters; a repeated key returns the first task"),
        ("X-Trace-Id" = Option<String>, Header, description = "Trace id to use (at most 64 of [A-Za-z0-9._-]); a new one otherwise")),
    responses(
        (status = 200, description = "The new task, RUNNING: the seed restart steps on every server of the zone in parallel, then the zone's and the cluster's steps", body = Envelope<TaskView>),
        (status = 400, description = "A bad parameter, the zone has no servers, or a server's state refuses it (SERVER_STATE_INVALID)", body = ErrorEnvelope),
        (status = 404, description = "No such cluster or zone (CLUSTER_NOT_FOUND, ZONE_NOT_FOUND)", body = ErrorEnvelope),
        (status = 409, description = "The cluster's zones, or one of the servers, are held by a RUNNING task (TARGET_BUSY, naming it)", body = ErrorEnvelope),
        (status = 422, description = "The Idempotency-Key was used for another operation (IDEMPOTENCY_KEY_REUSED)", body = ErrorEnvelope),
    )
)]
pub async fn restart_zone(
    State(state): State<AppState>,
    ctx: RequestCtx,
    caller: Caller,
    key: IdempotencyKey,
    ApiPath(p): ApiPath<ZonePath>,
    ApiQuery(q): ApiQuery<ForceQuery>,
) -> Result<Success<TaskView>> {
    let op = ServerOp {
        template: Template::RestartObserver,
        force: q.force,
    };
    zone_operation(&state, &ctx, &caller, key, p, op).await
}

/// Start every server of a zone (taskd's extension).
#[utoipa::path(
    post,
    path = "/api/v2/ob/clusters/{id}/zones/{zoneName}/start",
    tag = "operations",
    params(ZonePath,
        ("Idempotency-Key" = Option<String>, Header, description = "At most 128 visible ASCII characters; a repeated key returns the first task"),
        ("X-Trace-Id" = Option<String>, Header, description = "Trace id to use (at most 64 of [A-Za-z0-9._-]); a new one otherwise")),
    responses(
        (status = 200, description = "The new task, RUNNING: the seed start steps on every server of the zone in parallel, then the zone's and the cluster's steps", body = Envelope<TaskView>),
        (status = 400, description = "A bad parameter, the zone has no servers, or a server is not STOPPED (SERVER_STATE_INVALID)", body = ErrorEnvelope),
        (status = 404, description = "No such cluster or zone (CLUSTER_NOT_FOUND, ZONE_NOT_FOUND)", body = ErrorEnvelope),
        (status = 409, description = "The cluster's zones, or one of the servers, are held by a RUNNING task (TARGET_BUSY, naming it)", body = ErrorEnvelope),
        (status = 422, description = "The Idempotency-Key was used for another operation (IDEMPOTENCY_KEY_REUSED)", body = ErrorEnvelope),
    )
)]
pub async fn start_zone(
    State(state): State<AppState>,
    ctx: RequestCtx,
    caller: Caller,
    key: IdempotencyKey,
    ApiPath(p): ApiPath<ZonePath>,
) -> Result<Success<TaskView>> {
    let op = ServerOp {
        template: Template::StartObserver,
        force: false,
    };
    zone_operation(&state, &ctx, &caller, key, p, op).await
}

/// Stop every server of a zone (taskd's extension).
#[utoipa::path(
    post,
    path = "/api/v2/ob/clusters/{id}/zones/{zoneName}/stop",
    tag = "operations",
    params(ZonePath, ForceQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "At most 128 visible ASCII characters; a repeated key returns the first task"),
        ("X-Trace-Id" = Option<String>, Header, description = "Trace id to use (at most 64 of [A-Za-z0-9._-]); a new one otherwise")),
    responses(
        (status = 200, description = "The new task, RUNNING: the seed stop steps on every server of the zone in parallel, then the zone (STOPPED) and the cluster", body = Envelope<TaskView>),
        (status = 400, description = "A bad parameter, the zone has no servers, or a server is not RUNNING (SERVER_STATE_INVALID)", body = ErrorEnvelope),
        (status = 404, description = "No such cluster or zone (CLUSTER_NOT_FOUND, ZONE_NOT_FOUND)", body = ErrorEnvelope),
        (status = 409, description = "The cluster's zones, or one of the servers, are held by a RUNNING task (TARGET_BUSY, naming it)", body = ErrorEnvelope),
        (status = 422, description = "The Idempotency-Key was used for another operation (IDEMPOTENCY_KEY_REUSED)", body = ErrorEnvelope),
    )
)]
pub async fn stop_zone(
    State(state): State<AppState>,
    ctx: RequestCtx,
    caller: Caller,
    key: IdempotencyKey,
    ApiPath(p): ApiPath<ZonePath>,
    ApiQuery(q): ApiQuery<ForceQuery>,
) -> Result<Success<TaskView>> {
    let op = ServerOp {
        template: Template::StopObserver,
        force: q.force,
    };
    zone_operation(&state, &ctx, &caller, key, p, op).await
}

/// Restart the OCP agents of many hosts (taskd's extension).
#[utoipa::path(
    post,
    path = "/compute/hosts/agent/restart",
    tag = "operations",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "At most 128 visible ASCII characters; a repeated key returns the first task"),
        ("X-Trace-Id" = Option<String>, Header, description = "Trace id to use (at most 64 of [A-Za-z0-9._-]); a new one otherwise")),
    request_body = RestartAgentsBody,
    responses(
        (status = 200, description = "The new task, RUNNING: the seed agent-restart steps once per host, at most `parallelism` hosts at once; a host that fails fails only its own chain", body = Envelope<TaskView>),
        (status = 400, description = "A bad body, or an agent is RESTARTING (AGENT_STATE_INVALID)", body = ErrorEnvelope),
        (status = 404, description = "A host does not exist (HOST_NOT_FOUND)", body = ErrorEnvelope),
        (status = 409, description = "A host is held by a RUNNING task (TARGET_BUSY, naming it)", body = ErrorEnvelope),
        (status = 422, description = "The Idempotency-Key was used for another operation (IDEMPOTENCY_KEY_REUSED)", body = ErrorEnvelope),
    )
)]
pub async fn restart_agents(
    State(state): State<AppState>,
    ctx: RequestCtx,
    caller: Caller,
    key: IdempotencyKey,
    OptionalJson(body): OptionalJson<Option<RestartAgentsBody>>,
) -> Result<Success<TaskView>> {
    agent_batch(&state, &ctx, &caller, key, body).await
}

/// Restart the OCP agents of many hosts (the same operation under `/api/v2`).
#[utoipa::path(
    post,
    path = "/api/v2/compute/hosts/agent/restart",
    tag = "operations",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "At most 128 visible ASCII characters; a repeated key returns the first task"),
        ("X-Trace-Id" = Option<String>, Header, description = "Trace id to use (at most 64 of [A-Za-z0-9._-]); a new one otherwise")),
    request_body = RestartAgentsBody,
    responses(
        (status = 200, description = "The new task, RUNNING (see /compute/hosts/agent/restart)", body = Envelope<TaskView>),
        (status = 400, description = "A bad body, or an agent is RESTARTING (AGENT_STATE_INVALID)", body = ErrorEnvelope),
        (status = 404, description = "A host does not exist (HOST_NOT_FOUND)", body = ErrorEnvelope),
        (status = 409, description = "A host is held by a RUNNING task (TARGET_BUSY, naming it)", body = ErrorEnvelope),
        (status = 422, description = "The Idempotency-Key was used for another operation (IDEMPOTENCY_KEY_REUSED)", body = ErrorEnvelope),
    )
)]
pub async fn restart_agents_v2(
    State(state): State<AppState>,
    ctx: RequestCtx,
    caller: Caller,
    key: IdempotencyKey,
    OptionalJson(body): OptionalJson<Option<RestartAgentsBody>>,
) -> Result<Success<TaskView>> {
    agent_batch(&state, &ctx, &caller, key, body).await
}

// ---------------------------------------------------------------- the work

/// A zone of a multi-server task with the servers it works on.
struct Part {
    zone: ZoneRow,
    servers: Vec<ServerRow>,
}

async fn cluster_inventory(
    state: &AppState,
    cluster: i64,
) -> Result<(ClusterRow, Vec<ZoneRow>, Vec<ServerRow>)> {
    let c = inventory::get_cluster(&state.pool, cluster)
        .await?
        .ok_or_else(|| {
            Error::not_found(
                code::CLUSTER_NOT_FOUND,
                format!("cluster {cluster} does not exist"),
            )
            .with_target("id")
        })?;
    let mut zones = inventory::zones_of_clusters(&state.pool, &[cluster]).await?;
    zones.sort_by_key(|z| z.id);
    let servers = inventory::servers_of_cluster(&state.pool, cluster).await?;
    Ok((c, zones, servers))
}

/// The zones (in rollout order) and servers a cluster restart works on.
fn choose(
    body: &RestartClusterBody,
    zones: Vec<ZoneRow>,
    servers: Vec<ServerRow>,
) -> Result<Vec<Part>> {
    let chosen: Vec<ZoneRow> = match &body.zone_names {
        None => zones,
        Some(names) => {
            let mut out: Vec<ZoneRow> = Vec::with_capacity(names.len());
            for n in names {
                if out.iter().any(|z| &z.name == n) {
                    return Err(Error::invalid(
                        "body",
                        "zoneNames",
                        n.clone(),
                        "names a zone twice",
                    ));
                }
                let z = zones.iter().find(|z| &z.name == n).ok_or_else(|| {
                    Error::not_found(
                        code::ZONE_NOT_FOUND,
                        format!("zone {n:?} is not in the cluster"),
                    )
                    .with_target("zoneNames")
                })?;
                out.push(z.clone());
            }
            out
        }
    };
    if let Some(ids) = &body.server_ids {
        for (i, id) in ids.iter().enumerate() {
            if ids[..i].contains(id) {
                return Err(Error::invalid(
                    "body",
                    "serverIds",
                    *id,
                    "names a server twice",
                ));
            }
            let Some(s) = servers.iter().find(|s| s.id == *id) else {
                return Err(Error::not_found(
                    code::SERVER_NOT_FOUND,
                    format!("server {id} is not in the cluster"),
                )
                .with_target("serverIds"));
            };
            if !chosen.iter().any(|z| z.id == s.zone_id) {
                return Err(Error::invalid(
                    "body",
                    "serverIds",
                    *id,
                    "is not in one of the chosen zoneNames",
                ));
            }
        }
    }
    let parts: Vec<Part> = chosen
        .into_iter()
        .map(|zone| {
            let mut own: Vec<ServerRow> = servers
                .iter()
                .filter(|s| s.zone_id == zone.id)
                .filter(|s| {
                    body.server_ids
                        .as_ref()
                        .is_none_or(|ids| ids.contains(&s.id))
                })
                .cloned()
                .collect();
            own.sort_by_key(|s| s.id);
            Part { zone, servers: own }
        })
        .filter(|p| !p.servers.is_empty())
        .collect();
    if parts.is_empty() {
        return Err(Error::invalid(
            "body",
            "serverIds",
            serde_json::Value::Null,
            "the restart would touch no server",
        ));
    }
    Ok(parts)
}

/// Every server must be in a state the seed operation accepts.
fn guard(op: ServerOp, parts: &[Part]) -> Result<()> {
    for s in parts.iter().flat_map(|p| &p.servers) {
        if !op.accepts(s.status) {
            return Err(Error::refused(
                StatusCode::BAD_REQUEST,
                code::SERVER_STATE_INVALID,
                format!("server {} is {}; {}", s.id, s.status, op.wanted()),
            )
            .with_target("serverId"));
        }
    }
    Ok(())
}

/// The context of a multi-server task: the seed's cluster keys, every
/// server (`server_ids`) and zone (`zone_ids`), each zone's servers (the
/// split of its steps) and former status.
fn multi_context(cluster: &ClusterRow, parts: &[Part], op: ServerOp) -> Context {
    let mut c = Context::default();
    c.set(key::CLUSTER_NAME, cluster.name.clone());
    c.set(key::CLUSTER_ID, cluster.id.to_string());
    c.set(key::AGENT_SERVICE_NAME, "agent");
    c.set(key::PROHIBIT_ROLLBACK, "false");
    c.set(
        status_key(Phase::Former, Level::Cluster),
        cluster.status.as_str(),
    );
    c.set(status_key(Phase::Target, Level::Cluster), "RUNNING");
    let zone_target = if op.template == Template::StopObserver {
        "STOPPED"
    } else {
        "RUNNING"
    };
    c.set(status_key(Phase::Target, Level::Zone), zone_target);
    if op.force {
        c.set(key::FORCE, "true");
    }
    let mut all = Vec::new();
    for p in parts {
        c.set(rollout::former_zone_key(p.zone.id), p.zone.status.as_str());
        let ids: Vec<String> = p.servers.iter().map(|s| s.id.to_string()).collect();
        all.extend(ids.iter().cloned());
        c.list_map.insert(rollout::zone_servers_key(p.zone.id), ids);
    }
    c.list_map.insert(SERVER_IDS.into(), all);
    c.list_map.insert(
        ZONE_IDS.into(),
        parts.iter().map(|p| p.zone.id.to_string()).collect(),
    );
    c.list_map.insert(
        "zone_names".into(),
        parts.iter().map(|p| p.zone.name.clone()).collect(),
    );
    c
}

#[allow(clippy::too_many_arguments)]
fn multi_server_task(
    state: &AppState,
    ctx: &RequestCtx,
    caller: &Caller,
    key: IdempotencyKey,
    rollout: Rollout,
    cluster: &ClusterRow,
    parts: &[Part],
    op: ServerOp,
    target_key: String,
) -> NewTask {
    let mut holds = vec![format!("cluster:{}", cluster.id)];
    holds.extend(
        parts
            .iter()
            .flat_map(|p| &p.servers)
            .map(|s| format!("server:{}", s.id)),
    );
    NewTask {
        name: rollout.task_name().to_string(),
        task_type: TaskType::Manual,
        creator: caller.name.clone(),
        executor: Some(state.server.clone()),
        cluster_id: Some(cluster.id),
        host_id: None,
        server_id: None,
        target_key: Some(target_key),
        holds,
        context: multi_context(cluster, parts, op),
        prohibit_rollback: false,
        max_concurrency: MAX_CONCURRENCY,
        trace_id: ctx.trace_id.clone(),
        idempotency_key: key.0,
    }
}

async fn zone_operation(
    state: &AppState,
    ctx: &RequestCtx,
    caller: &Caller,
    key: IdempotencyKey,
    p: ZonePath,
    op: ServerOp,
) -> Result<Success<TaskView>> {
    let rollout = Rollout::Zone(op.template);
    let (cluster, zones, servers) = cluster_inventory(state, p.id).await?;
    let zone = zones
        .into_iter()
        .find(|z| z.name == p.zone_name)
        .ok_or_else(|| {
            Error::not_found(
                code::ZONE_NOT_FOUND,
                format!("zone {:?} is not in cluster {}", p.zone_name, p.id),
            )
            .with_target("zoneName")
        })?;
    let target_key = format!("zone:{}", zone.id);
    if let Some(first) = replay(state, &key, rollout.task_name(), &target_key, Some(p.id)).await? {
        return Ok(Success(first));
    }
    let mut own: Vec<ServerRow> = servers
        .into_iter()
        .filter(|s| s.zone_id == zone.id)
        .collect();
    own.sort_by_key(|s| s.id);
    if own.is_empty() {
        return Err(Error::invalid(
            "path",
            "zoneName",
            p.zone_name.clone(),
            "the zone has no servers",
        ));
    }
    let parts = [Part { zone, servers: own }];
    guard(op, &parts)?;
    let nodes = rollout::zone_operation(op.template, parts[0].zone.id, &parts[0].zone.name);
    let mut task = multi_server_task(
        state, ctx, caller, key, rollout, &cluster, &parts, op, target_key,
    );
    task.context.set(key::ZONE_NAME, parts[0].zone.name.clone());
    submit(state, task, nodes).await
}

/// Validates an agent batch's body; returns (host ids, parallelism).
fn batch_params(body: Option<RestartAgentsBody>) -> Result<(Vec<i64>, i32)> {
    let Some(body) = body else {
        return Err(Error::invalid(
            "body",
            "hostIds",
            serde_json::Value::Null,
            "is required: the hosts whose agents to restart",
        ));
    };
    if body.host_ids.is_empty() || body.host_ids.len() > MAX_BATCH_HOSTS {
        return Err(Error::invalid(
            "body",
            "hostIds",
            body.host_ids.len(),
            format!("must list 1 to {MAX_BATCH_HOSTS} hosts"),
        ));
    }
    for (i, id) in body.host_ids.iter().enumerate() {
        if *id < 1 {
            return Err(Error::invalid(
                "body",
                "hostIds",
                *id,
                "must be positive ids",
            ));
        }
        if body.host_ids[..i].contains(id) {
            return Err(Error::invalid("body", "hostIds", *id, "names a host twice"));
        }
    }
    let parallelism = body.parallelism.unwrap_or(MAX_CONCURRENCY);
    if !(1..=MAX_BATCH_HOSTS as i32).contains(&parallelism) {
        return Err(Error::invalid(
            "body",
            "parallelism",
            parallelism,
            format!("must be between 1 and {MAX_BATCH_HOSTS}"),
        ));
    }
    Ok((body.host_ids, parallelism))
}

async fn agent_batch(
    state: &AppState,
    ctx: &RequestCtx,
    caller: &Caller,
    key: IdempotencyKey,
    body: Option<RestartAgentsBody>,
) -> Result<Success<TaskView>> {
    let rollout = Rollout::AgentBatch;
    let (host_ids, parallelism) = batch_params(body)?;
    let mut sorted = host_ids.clone();
    sorted.sort_unstable();
    let listed: Vec<String> = sorted.iter().map(i64::to_string).collect();
    let target_key = format!("hosts:{}", listed.join(","));
    if let Some(first) = replay(state, &key, rollout.task_name(), &target_key, None).await? {
        return Ok(Success(first));
    }
    let hosts = inventory::get_hosts(&state.pool, &host_ids).await?;
    if let Some(missing) = host_ids
        .iter()
        .find(|id| !hosts.iter().any(|h| h.id == **id))
    {
        return Err(Error::not_found(
            code::HOST_NOT_FOUND,
            format!("host {missing} does not exist"),
        )
        .with_target("hostIds"));
    }
    if let Some(h) = hosts
        .iter()
        .find(|h| h.agent_status == AgentStatus::Restarting)
    {
        return Err(Error::refused(
            StatusCode::BAD_REQUEST,
            code::AGENT_STATE_INVALID,
            format!("the agent of host {} is already RESTARTING", h.id),
        )
        .with_target("hostIds"));
    }
    let mut context = Context::default();
    context.set(key::PROHIBIT_ROLLBACK, "false");
    context.list_map.insert(
        HOST_IDS.into(),
        host_ids.iter().map(i64::to_string).collect(),
    );
    let task = NewTask {
        name: rollout.task_name().to_string(),
        task_type: TaskType::Manual,
        creator: caller.name.clone(),
        executor: Some(state.server.clone()),
        cluster_id: None,
        host_id: None,
        server_id: None,
        target_key: Some(target_key),
        holds: host_ids.iter().map(|h| format!("host:{h}")).collect(),
        context,
        prohibit_rollback: false,
        max_concurrency: parallelism,
        trace_id: ctx.trace_id.clone(),
        idempotency_key: key.0,
    };
    submit(state, task, rollout::agent_batch()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(hosts: Vec<i64>, parallelism: Option<i32>) -> Option<RestartAgentsBody> {
        Some(RestartAgentsBody {
            host_ids: hosts,
            parallelism,
        })
    }

    #[test]
    fn batch_bodies_are_checked() {
        assert_eq!(
            batch_params(body(vec![3, 1], Some(2))).unwrap(),
            (vec![3, 1], 2)
        );
        assert_eq!(
            batch_params(body(vec![1], None)).unwrap().1,
            MAX_CONCURRENCY
        );
        for bad in [
            None,
            body(vec![], None),
            body(vec![1, 1], None),
            body(vec![0], None),
            body(vec![1], Some(0)),
            body(vec![1], Some(1001)),
            body((1..=1001).collect(), None),
        ] {
            assert!(batch_params(bad.clone()).is_err(), "{bad:?}");
        }
    }
}
