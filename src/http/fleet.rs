//! taskd's own operations over many servers or hosts, in OCP's style (paths
//! under OCP's prefixes, its envelope and task JSON): a rolling restart of a
//! cluster zone by zone, restart/start/stop of every server of one zone,
//! and an agent restart across many hosts, at most `parallelism` at once.
//!
//! The rules (guards, contexts, the keys each task holds) live in
//! `crate::operations::fleet`; here each route parses its path and body,
//! states its permission and answers: 404 CLUSTER_NOT_FOUND /
//! ZONE_NOT_FOUND / SERVER_NOT_FOUND / HOST_NOT_FOUND, 400
//! SERVER_STATE_INVALID / AGENT_STATE_INVALID / ILLEGAL_ARGUMENT, 409
//! TARGET_BUSY naming the task that holds the target, 422
//! IDEMPOTENCY_KEY_REUSED.

use super::envelope::{Envelope, ErrorEnvelope, RequestCtx, Success};
use super::error::{code, Error, Result};
use super::extract::{
    check_json_content_type, parse_json, positive_id, ApiPath, ApiQuery, Caller, IdempotencyKey,
    Validate,
};
use super::ops::{operate, ForceQuery};
use super::tasks::TaskView;
use super::AppState;
use crate::auth::{Permission, RequireExt};
use crate::dag::templates::Template;
use crate::operations::{AgentBatch, ClusterRestart, ZoneOperation};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

/// Zone and cluster operations need CLUSTER_MANAGER on the path's cluster,
/// the agent batch HOST_MANAGER (or ADMIN for both).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    let server = Permission::ServerOperate;
    let agent = Permission::AgentRestart;
    OpenApiRouter::new()
        .routes(routes!(restart_cluster).require(server))
        .routes(routes!(restart_zone).require(server))
        .routes(routes!(start_zone).require(server))
        .routes(routes!(stop_zone).require(server))
        .routes(routes!(restart_agents).require(agent))
        .routes(routes!(restart_agents_v2).require(agent))
}

// ---------------------------------------------------------------- params

/// `{id}` (cluster).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ClusterPath {
    /// Id of the cluster.
    #[param(minimum = 1)]
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
    #[param(minimum = 1)]
    pub id: i64,
    /// Name of the zone, in that cluster.
    #[serde(rename = "zoneName")]
    #[param(rename = "zoneName")]
    #[param(min_length = 1, max_length = 128)]
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
    #[schema(min_items = 1, max_items = 1000)]
    pub host_ids: Vec<i64>,
    /// Most hosts restarted at once (the task's concurrency limit), 1 to
    /// 1000; default 10.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
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
    let op = ClusterRestart {
        cluster: p.id,
        force: q.force,
        zone_names: body.zone_names,
        server_ids: body.server_ids,
    };
    operate(&state, &ctx, &caller, key, &op).await
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
    let op = ZoneOperation {
        template: Template::RestartObserver,
        force: q.force,
        cluster: p.id,
        zone: p.zone_name,
    };
    operate(&state, &ctx, &caller, key, &op).await
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
    let op = ZoneOperation {
        template: Template::StartObserver,
        force: false,
        cluster: p.id,
        zone: p.zone_name,
    };
    operate(&state, &ctx, &caller, key, &op).await
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
    let op = ZoneOperation {
        template: Template::StopObserver,
        force: q.force,
        cluster: p.id,
        zone: p.zone_name,
    };
    operate(&state, &ctx, &caller, key, &op).await
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

async fn agent_batch(
    state: &AppState,
    ctx: &RequestCtx,
    caller: &Caller,
    key: IdempotencyKey,
    body: Option<RestartAgentsBody>,
) -> Result<Success<TaskView>> {
    let Some(body) = body else {
        return Err(Error::invalid(
            "body",
            "hostIds",
            serde_json::Value::Null,
            "is required: the hosts whose agents to restart",
        ));
    };
    let op = AgentBatch::new(body.host_ids, body.parallelism)?;
    operate(state, ctx, caller, key, &op).await
}
