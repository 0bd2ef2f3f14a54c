//! The four operations of the seeds: restart, start and stop an OBServer,
//! restart a host's OCP agent. Each guards its target, builds its template's
//! DAG and context as OCP does, submits it and returns the new task at once.
//!
//! Guards (a refused operation creates nothing):
//! - the cluster, server or host must exist and the server be in the cluster
//!   (404);
//! - start needs a STOPPED server; stop needs a RUNNING one (force also
//!   accepts ABNORMAL); restart needs a RUNNING or STOPPED one (force also
//!   accepts ABNORMAL): restarting a stopped server simply starts it, and a
//!   forced restart is how an abnormal one is recovered; servers in a
//!   transition (STARTING, STOPPING, RESTARTING) are refused (400
//!   SERVER_STATE_INVALID);
//! - an agent restart is refused while the agent is RESTARTING (400
//!   AGENT_STATE_INVALID);
//! - at most one RUNNING task per target, enforced by the database (409
//!   TARGET_BUSY).
//!
//! An `Idempotency-Key` seen before returns the first task (200) before any
//! guard runs; the same key on another operation or target is a 422.

use super::envelope::{Envelope, ErrorEnvelope, RequestCtx, Success};
use super::error::{code, Error, Result};
use super::extract::{positive_id, ApiPath, ApiQuery, Caller, IdempotencyKey, Validate};
use super::tasks::{load_task, TaskView};
use super::AppState;
use crate::auth::{Permission, RequireExt};
use crate::dag::templates::Template;
use crate::dag::{DagSpec, NodeSpec};
use crate::engine::{self, Submitted};
use crate::model::ocp::{OcpContext, ServerTargetKeys};
use crate::model::{Context, TaskId, TaskType};
use crate::store::inventory::{self, AgentStatus, ServerStatus, ServerTarget};
use crate::store::task::NewTask;
use crate::store::{self};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use utoipa::IntoParams;

/// Subtasks of one task that may be READY or RUNNING at once.
pub(super) const MAX_CONCURRENCY: i32 = 10;

/// Server operations need CLUSTER_MANAGER on the path's cluster, the agent
/// restart HOST_MANAGER (or ADMIN for both).
pub(crate) fn routes() -> Router<AppState> {
    const S: &str = "/api/v2/ob/clusters/{id}/servers/{serverId}";
    let server = Permission::ServerOperate;
    let agent = Permission::AgentRestart;
    Router::new()
        .route(
            &format!("{S}/restart"),
            post(restart_server).require(server),
        )
        .route(&format!("{S}/start"), post(start_server).require(server))
        .route(&format!("{S}/stop"), post(stop_server).require(server))
        .route(
            "/compute/hosts/{hostId}/agent/restart",
            post(restart_agent).require(agent),
        )
        .route(
            "/api/v2/compute/hosts/{hostId}/agent/restart",
            post(restart_agent_v2).require(agent),
        )
}

// ---------------------------------------------------------------- params

/// `{id}` (cluster) and `{serverId}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ServerPath {
    /// Id of the cluster.
    pub id: i64,
    /// Id of the OBServer, in that cluster.
    #[serde(rename = "serverId")]
    #[param(rename = "serverId")]
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
    let op = ServerOp {
        template: Template::RestartObserver,
        force: q.force,
    };
    server_operation(&state, &ctx, &caller, key, p, op).await
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
    let op = ServerOp {
        template: Template::StartObserver,
        force: false,
    };
    server_operation(&state, &ctx, &caller, key, p, op).await
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
    let op = ServerOp {
        template: Template::StopObserver,
        force: q.force,
    };
    server_operation(&state, &ctx, &caller, key, p, op).await
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
    agent_operation(&state, &ctx, &caller, key, p.host_id).await
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
    agent_operation(&state, &ctx, &caller, key, p.host_id).await
}

// ---------------------------------------------------------------- the work

#[derive(Debug, Clone, Copy)]
pub(super) struct ServerOp {
    pub(super) template: Template,
    pub(super) force: bool,
}

impl ServerOp {
    /// The server states this operation accepts.
    pub(super) fn accepts(self, status: ServerStatus) -> bool {
        use ServerStatus::*;
        match self.template {
            Template::StartObserver => status == Stopped,
            Template::StopObserver => status == Running || (self.force && status == Abnormal),
            Template::RestartObserver => {
                matches!(status, Running | Stopped) || (self.force && status == Abnormal)
            }
            Template::RestartAgent => false,
        }
    }

    pub(super) fn wanted(self) -> &'static str {
        match (self.template, self.force) {
            (Template::StartObserver, _) => "start needs a STOPPED server",
            (Template::StopObserver, false) => "stop needs a RUNNING server",
            (Template::StopObserver, true) => "a forced stop needs a RUNNING or ABNORMAL server",
            (Template::RestartObserver, false) => "restart needs a RUNNING or STOPPED server",
            (Template::RestartObserver, true) => {
                "a forced restart needs a RUNNING, STOPPED or ABNORMAL server"
            }
            (Template::RestartAgent, _) => "not a server operation",
        }
    }
}

/// The first task of a repeated Idempotency-Key, if it was for this
/// operation on this target (and, for a server, in the path's cluster: a
/// CLUSTER_MANAGER of one cluster cannot replay another cluster's task
/// through its own cluster's path).
pub(super) async fn replay(
    state: &AppState,
    key: &IdempotencyKey,
    name: &str,
    target_key: &str,
    cluster: Option<i64>,
) -> Result<Option<TaskView>> {
    let Some(k) = &key.0 else {
        return Ok(None);
    };
    match store::task::find_by_idempotency_key(&state.pool, k).await? {
        None => Ok(None),
        Some(t) => {
            if t.name != name
                || t.target_key.as_deref() != Some(target_key)
                || cluster.is_some_and(|c| t.cluster_id != Some(c))
            {
                return Err(key_reused(k));
            }
            Ok(Some(load_task(&state.pool, t.id).await?))
        }
    }
}

pub(super) fn key_reused(key: &str) -> Error {
    Error::refused(
        StatusCode::UNPROCESSABLE_ENTITY,
        code::IDEMPOTENCY_KEY_REUSED,
        format!("Idempotency-Key {key:?} was already used for another operation or target"),
    )
    .with_target("Idempotency-Key")
}

/// Submits the DAG and returns the task; a concurrent request with the same
/// Idempotency-Key gets the first task.
pub(super) async fn submit(
    state: &AppState,
    task: NewTask,
    nodes: Vec<NodeSpec>,
) -> Result<Success<TaskView>> {
    let spec = DagSpec {
        nodes,
        context: task.context.clone(),
    };
    let submitted = match engine::submit(&state.pool, &task, &spec).await {
        // A concurrent request with the same key may lose on the target's
        // index rather than on the key's: it is a replay all the same.
        Err(engine::Error::TargetBusy(busy)) => match &task.idempotency_key {
            Some(k) => match store::task::find_by_idempotency_key(&state.pool, k).await? {
                Some(first) => Submitted::Existing(TaskId(first.id)),
                None => return Err(engine::Error::TargetBusy(busy).into()),
            },
            None => return Err(engine::Error::TargetBusy(busy).into()),
        },
        other => other?,
    };
    if let (Submitted::Existing(id), Some(k)) = (submitted, &task.idempotency_key) {
        // A concurrent request with the same key won the race.
        let first = store::task::get(&state.pool, id).await?;
        if first.is_some_and(|t| t.name != task.name || t.target_key != task.target_key) {
            return Err(key_reused(k));
        }
    }
    Ok(Success(load_task(&state.pool, submitted.id().0).await?))
}

async fn server_operation(
    state: &AppState,
    ctx: &RequestCtx,
    caller: &Caller,
    key: IdempotencyKey,
    p: ServerPath,
    op: ServerOp,
) -> Result<Success<TaskView>> {
    let target_key = format!("server:{}", p.server_id);
    if let Some(first) = replay(
        state,
        &key,
        op.template.task_name(),
        &target_key,
        Some(p.id),
    )
    .await?
    {
        return Ok(Success(first));
    }
    let target = server_target(state, p.id, p.server_id).await?;
    let status = target.server.status;
    if !op.accepts(status) {
        return Err(Error::refused(
            StatusCode::BAD_REQUEST,
            code::SERVER_STATE_INVALID,
            format!("server {} is {status}; {}", target.server.id, op.wanted()),
        )
        .with_target("serverId"));
    }
    let task = NewTask {
        name: op.template.task_name().to_string(),
        task_type: TaskType::Manual,
        creator: caller.name.clone(),
        executor: Some(state.server.clone()),
        cluster_id: Some(target.cluster.id),
        host_id: None,
        server_id: Some(target.server.id),
        target_key: Some(target_key),
        holds: Vec::new(),
        context: server_context(&target, op.force),
        prohibit_rollback: false,
        max_concurrency: MAX_CONCURRENCY,
        trace_id: ctx.trace_id.clone(),
        idempotency_key: key.0,
    };
    submit(state, task, op.template.nodes()).await
}

/// The server with its zone, cluster and host; 404 naming what is missing.
async fn server_target(state: &AppState, cluster: i64, server: i64) -> Result<ServerTarget> {
    let target = inventory::get_server_target(&state.pool, server).await?;
    match target {
        Some(t) if t.cluster.id == cluster => Ok(t),
        found => {
            if inventory::get_cluster(&state.pool, cluster)
                .await?
                .is_none()
            {
                return Err(Error::not_found(
                    code::CLUSTER_NOT_FOUND,
                    format!("cluster {cluster} does not exist"),
                )
                .with_target("id"));
            }
            let message = match found {
                Some(_) => format!("server {server} is not in cluster {cluster}"),
                None => format!("server {server} does not exist"),
            };
            Err(Error::not_found(code::SERVER_NOT_FOUND, message).with_target("serverId"))
        }
    }
}

/// The context OCP gives a server operation (the restart sample's keys).
fn server_context(t: &ServerTarget, force: bool) -> Context {
    let target = ServerTargetKeys {
        cluster_id: t.cluster.id,
        cluster_name: t.cluster.name.clone(),
        cluster_status: t.cluster.status.as_str().to_string(),
        zone_name: t.zone.name.clone(),
        zone_status: t.zone.status.as_str().to_string(),
        server_id: t.server.id,
    };
    OcpContext::Server { target, force }.to_context()
}

async fn agent_operation(
    state: &AppState,
    ctx: &RequestCtx,
    caller: &Caller,
    key: IdempotencyKey,
    host_id: i64,
) -> Result<Success<TaskView>> {
    let template = Template::RestartAgent;
    let target_key = format!("host:{host_id}");
    if let Some(first) = replay(state, &key, template.task_name(), &target_key, None).await? {
        return Ok(Success(first));
    }
    let host = inventory::get_host(&state.pool, host_id)
        .await?
        .ok_or_else(|| {
            Error::not_found(
                code::HOST_NOT_FOUND,
                format!("host {host_id} does not exist"),
            )
            .with_target("hostId")
        })?;
    if host.agent_status == AgentStatus::Restarting {
        return Err(Error::refused(
            StatusCode::BAD_REQUEST,
            code::AGENT_STATE_INVALID,
            format!("the agent of host {host_id} is already RESTARTING"),
        )
        .with_target("hostId"));
    }
    let context = OcpContext::Agent { host_id: host.id }.to_context();
    let task = NewTask {
        name: template.task_name().to_string(),
        task_type: TaskType::Manual,
        creator: caller.name.clone(),
        executor: Some(state.server.clone()),
        cluster_id: None,
        host_id: Some(host.id),
        server_id: None,
        target_key: Some(target_key),
        holds: Vec::new(),
        context,
        prohibit_rollback: false,
        max_concurrency: MAX_CONCURRENCY,
        trace_id: ctx.trace_id.clone(),
        idempotency_key: key.0,
    };
    submit(state, task, template.nodes()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServerStatus::*;

    #[test]
    fn guards_follow_the_documented_states() {
        let op = |template, force| ServerOp { template, force };
        let start = op(Template::StartObserver, false);
        assert!(start.accepts(Stopped));
        for s in [Running, Starting, Stopping, Restarting, Abnormal] {
            assert!(!start.accepts(s), "{s}");
        }
        let stop = op(Template::StopObserver, false);
        assert!(stop.accepts(Running));
        assert!(!stop.accepts(Stopped));
        assert!(!stop.accepts(Abnormal));
        assert!(op(Template::StopObserver, true).accepts(Abnormal));
        let restart = op(Template::RestartObserver, false);
        assert!(restart.accepts(Running) && restart.accepts(Stopped));
        for s in [Starting, Stopping, Restarting, Abnormal] {
            assert!(!restart.accepts(s), "{s}");
        }
        assert!(op(Template::RestartObserver, true).accepts(Abnormal));
    }
}
