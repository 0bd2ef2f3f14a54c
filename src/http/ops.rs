//! The four operations of the seeds: restart, start and stop an OBServer,
//! restart a host's OCP agent: their routes, which return the new task at
//! once.
//!
//! The rules (guards, context, replay) live in `crate::operations`; here
//! each route parses its path, states its permission and answers: 404
//! CLUSTER_NOT_FOUND / SERVER_NOT_FOUND / HOST_NOT_FOUND, 400
//! SERVER_STATE_INVALID / AGENT_STATE_INVALID, 409 TARGET_BUSY, 422
//! IDEMPOTENCY_KEY_REUSED (see `http::error`).

use super::envelope::{Envelope, ErrorEnvelope, RequestCtx, Success};
use super::error::Result;
use super::extract::{positive_id, ApiPath, ApiQuery, Caller, IdempotencyKey, Validate};
use super::tasks::{load_task, TaskView};
use super::AppState;
use crate::auth::{Permission, RequireExt};
use crate::dag::templates::Template;
use crate::db::{self, Retry};
use crate::operations::{self, Operation, Origin, RestartAgent, ServerOperation};
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

/// Server operations need CLUSTER_MANAGER on the path's cluster, the agent
/// restart HOST_MANAGER (or ADMIN for both).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    let server = Permission::ServerOperate;
    let agent = Permission::AgentRestart;
    OpenApiRouter::new()
        .routes(routes!(restart_server).require(server))
        .routes(routes!(start_server).require(server))
        .routes(routes!(stop_server).require(server))
        .routes(routes!(restart_agent).require(agent))
        .routes(routes!(restart_agent_v2).require(agent))
}

// ---------------------------------------------------------------- params

/// `{id}` (cluster) and `{serverId}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ServerPath {
    /// Id of the cluster.
    #[param(minimum = 1)]
    pub id: i64,
    /// Id of the OBServer, in that cluster.
    #[serde(rename = "serverId")]
    #[param(rename = "serverId")]
    #[param(minimum = 1)]
    pub server_id: i64,
}

impl Validate for ServerPath {
    fn validate(&self) -> Result<()> {
        positive_id("id", self.id)?;
        positive_id("serverId", self.server_id).map(drop)
    }
}

/// `{hostId}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct HostPath {
    /// Id of the host.
    #[serde(rename = "hostId")]
    #[param(rename = "hostId")]
    #[param(minimum = 1)]
    pub host_id: i64,
}

impl Validate for HostPath {
    fn validate(&self) -> Result<()> {
        positive_id("hostId", self.host_id).map(drop)
    }
}

/// `force` of restart and stop.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ForceQuery {
    /// Force the operation (default false); also admits an ABNORMAL server.
    #[serde(default)]
    pub force: bool,
}

// ---------------------------------------------------------------- handlers

/// Restart an OBServer.
#[utoipa::path(
    post,
    path = "/api/v2/ob/clusters/{id}/servers/{serverId}/restart",
    tag = "operations",
    params(ServerPath, ForceQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "At most 128 visible ASCII characters; a repeated key returns the first task"),
        ("X-Trace-Id" = Option<String>, Header, description = "Trace id to use (at most 64 of [A-Za-z0-9._-]); a new one otherwise")),
    responses(
        (status = 200, description = "The new task, RUNNING (or the first task of a repeated Idempotency-Key)", body = Envelope<TaskView>),
        (status = 400, description = "A bad parameter, or the server's state refuses it (SERVER_STATE_INVALID)", body = ErrorEnvelope),
        (status = 404, description = "No such cluster or server, or the server is not in the cluster", body = ErrorEnvelope),
        (status = 409, description = "The server already has a RUNNING task (TARGET_BUSY)", body = ErrorEnvelope),
        (status = 422, description = "The Idempotency-Key was used for another operation (IDEMPOTENCY_KEY_REUSED)", body = ErrorEnvelope),
    )
)]
pub async fn restart_server(
    State(state): State<AppState>,
    ctx: RequestCtx,
    caller: Caller,
    key: IdempotencyKey,
    ApiPath(p): ApiPath<ServerPath>,
    ApiQuery(q): ApiQuery<ForceQuery>,
) -> Result<Success<TaskView>> {
    let op = server_op(Template::RestartObserver, q.force, &p);
    operate(&state, &ctx, &caller, key, &op).await
}

/// Start an OBServer.
#[utoipa::path(
    post,
    path = "/api/v2/ob/clusters/{id}/servers/{serverId}/start",
    tag = "operations",
    params(ServerPath,
        ("Idempotency-Key" = Option<String>, Header, description = "At most 128 visible ASCII characters; a repeated key returns the first task"),
        ("X-Trace-Id" = Option<String>, Header, description = "Trace id to use (at most 64 of [A-Za-z0-9._-]); a new one otherwise")),
    responses(
        (status = 200, description = "The new task, RUNNING (or the first task of a repeated Idempotency-Key)", body = Envelope<TaskView>),
        (status = 400, description = "A bad parameter, or the server is not STOPPED (SERVER_STATE_INVALID)", body = ErrorEnvelope),
        (status = 404, description = "No such cluster or server, or the server is not in the cluster", body = ErrorEnvelope),
        (status = 409, description = "The server already has a RUNNING task (TARGET_BUSY)", body = ErrorEnvelope),
        (status = 422, description = "The Idempotency-Key was used for another operation (IDEMPOTENCY_KEY_REUSED)", body = ErrorEnvelope),
    )
)]
pub async fn start_server(
    State(state): State<AppState>,
    ctx: RequestCtx,
    caller: Caller,
    key: IdempotencyKey,
    ApiPath(p): ApiPath<ServerPath>,
) -> Result<Success<TaskView>> {
    let op = server_op(Template::StartObserver, false, &p);
    operate(&state, &ctx, &caller, key, &op).await
}

/// Stop an OBServer.
#[utoipa::path(
    post,
    path = "/api/v2/ob/clusters/{id}/servers/{serverId}/stop",
    tag = "operations",
    params(ServerPath, ForceQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "At most 128 visible ASCII characters; a repeated key returns the first task"),
        ("X-Trace-Id" = Option<String>, Header, description = "Trace id to use (at most 64 of [A-Za-z0-9._-]); a new one otherwise")),
    responses(
        (status = 200, description = "The new task, RUNNING (or the first task of a repeated Idempotency-Key)", body = Envelope<TaskView>),
        (status = 400, description = "A bad parameter, or the server is not RUNNING (SERVER_STATE_INVALID)", body = ErrorEnvelope),
        (status = 404, description = "No such cluster or server, or the server is not in the cluster", body = ErrorEnvelope),
        (status = 409, description = "The server already has a RUNNING task (TARGET_BUSY)", body = ErrorEnvelope),
        (status = 422, description = "The Idempotency-Key was used for another operation (IDEMPOTENCY_KEY_REUSED)", body = ErrorEnvelope),
    )
)]
pub async fn stop_server(
    State(state): State<AppState>,
    ctx: RequestCtx,
    caller: Caller,
    key: IdempotencyKey,
    ApiPath(p): ApiPath<ServerPath>,
    ApiQuery(q): ApiQuery<ForceQuery>,
) -> Result<Success<TaskView>> {
    let op = server_op(Template::StopObserver, q.force, &p);
    operate(&state, &ctx, &caller, key, &op).await
}

/// Restart the OCP agent of a host (the path OCP documents, without
/// `/api/v2`).
#[utoipa::path(
    post,
    path = "/compute/hosts/{hostId}/agent/restart",
    tag = "operations",
    params(HostPath,
        ("Idempotency-Key" = Option<String>, Header, description = "At most 128 visible ASCII characters; a repeated key returns the first task"),
        ("X-Trace-Id" = Option<String>, Header, description = "Trace id to use (at most 64 of [A-Za-z0-9._-]); a new one otherwise")),
    responses(
        (status = 200, description = "The new task, RUNNING (or the first task of a repeated Idempotency-Key)", body = Envelope<TaskView>),
        (status = 400, description = "A bad parameter, or the agent is RESTARTING (AGENT_STATE_INVALID)", body = ErrorEnvelope),
        (status = 404, description = "No such host (HOST_NOT_FOUND)", body = ErrorEnvelope),
        (status = 409, description = "The host already has a RUNNING task (TARGET_BUSY)", body = ErrorEnvelope),
        (status = 422, description = "The Idempotency-Key was used for another operation (IDEMPOTENCY_KEY_REUSED)", body = ErrorEnvelope),
    )
)]
pub async fn restart_agent(
    State(state): State<AppState>,
    ctx: RequestCtx,
    caller: Caller,
    key: IdempotencyKey,
    ApiPath(p): ApiPath<HostPath>,
) -> Result<Success<TaskView>> {
    let op = RestartAgent { host: p.host_id };
    operate(&state, &ctx, &caller, key, &op).await
}

/// Restart the OCP agent of a host (the same operation under `/api/v2`).
#[utoipa::path(
    post,
    path = "/api/v2/compute/hosts/{hostId}/agent/restart",
    tag = "operations",
    params(HostPath,
        ("Idempotency-Key" = Option<String>, Header, description = "At most 128 visible ASCII characters; a repeated key returns the first task"),
        ("X-Trace-Id" = Option<String>, Header, description = "Trace id to use (at most 64 of [A-Za-z0-9._-]); a new one otherwise")),
    responses(
        (status = 200, description = "The new task, RUNNING (or the first task of a repeated Idempotency-Key)", body = Envelope<TaskView>),
        (status = 400, description = "A bad parameter, or the agent is RESTARTING (AGENT_STATE_INVALID)", body = ErrorEnvelope),
        (status = 404, description = "No such host (HOST_NOT_FOUND)", body = ErrorEnvelope),
        (status = 409, description = "The host already has a RUNNING task (TARGET_BUSY)", body = ErrorEnvelope),
        (status = 422, description = "The Idempotency-Key was used for another operation (IDEMPOTENCY_KEY_REUSED)", body = ErrorEnvelope),
    )
)]
pub async fn restart_agent_v2(
    State(state): State<AppState>,
    ctx: RequestCtx,
    caller: Caller,
    key: IdempotencyKey,
    ApiPath(p): ApiPath<HostPath>,
) -> Result<Success<TaskView>> {
    let op = RestartAgent { host: p.host_id };
    operate(&state, &ctx, &caller, key, &op).await
}

// ---------------------------------------------------------------- the work

/// Runs the operation (see `crate::operations`) and answers with its task.
pub(super) async fn operate(
    state: &AppState,
    ctx: &RequestCtx,
    caller: &Caller,
    key: IdempotencyKey,
    op: &dyn Operation,
) -> Result<Success<TaskView>> {
    let origin = Origin {
        creator: caller.name.clone(),
        executor: state.server.clone(),
        trace_id: ctx.trace_id.clone(),
        idempotency_key: key.0,
    };
    // Under an Idempotency-Key a repeat returns the first task, so the whole
    // operation is retried after any connection fault, a lost reply to its
    // commit included. Without one, only when nothing can have committed
    // (a repeat could create a second task); an unclear fault answers 503.
    let policy = match origin.idempotency_key {
        Some(_) => Retry::Idempotent,
        None => Retry::NotCommitted,
    };
    let id = db::retry(policy, "operation", || {
        operations::submit(&state.pool, origin.clone(), op)
    })
    .await?;
    let task = db::retry(Retry::Idempotent, "operation's task", || {
        load_task(&state.pool, id.0)
    })
    .await?;
    Ok(Success(task))
}

fn server_op(template: Template, force: bool, p: &ServerPath) -> ServerOperation {
    ServerOperation {
        template,
        force,
        cluster: p.id,
        server: p.server_id,
    }
}
