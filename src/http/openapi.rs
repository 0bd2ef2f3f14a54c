//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]`
//! attributes and the `ToSchema` types, served raw (tools read it as is) at
//! `/api/v2/openapi.json`.

use super::envelope::{EmptyEnvelope, ErrorEnvelope, PageInfo};
use super::error::{ErrorBody, SubError};
use super::{health, inventory, ops, tasks};
use axum::Json;
use std::sync::LazyLock;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "taskd",
        description = "OCP-compatible task API: OBServer and agent operations as DAG tasks, \
                       task management and the inventory. Every response is OCP's envelope \
                       (`data` or `error`, `successful`, `timestamp`, `duration`, `status`, \
                       `traceId`, `server`); send `X-Trace-Id` to choose the trace id."
    ),
    paths(
        ops::restart_server,
        ops::start_server,
        ops::stop_server,
        ops::restart_agent,
        ops::restart_agent_v2,
        tasks::list_tasks,
        tasks::get_task,
        tasks::retry_task,
        tasks::rollback_task,
        tasks::subtask_log,
        tasks::retry_subtask,
        tasks::skip_subtask,
        tasks::cancel_subtask,
        inventory::create_host,
        inventory::list_hosts,
        inventory::get_host,
        inventory::create_cluster,
        inventory::list_clusters,
        inventory::get_cluster,
        inventory::list_servers,
        health::healthz,
        health::readyz,
        health::metrics,
        openapi_json,
    ),
    components(schemas(ErrorEnvelope, EmptyEnvelope, ErrorBody, SubError, PageInfo)),
    tags(
        (name = "operations", description = "Restart, start and stop OBServers; restart host agents"),
        (name = "tasks", description = "Task instances and their subtasks"),
        (name = "inventory", description = "Hosts, clusters, zones and servers"),
        (name = "health", description = "Probes (no authentication)"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

static DOC: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);

/// The OpenAPI document itself.
#[utoipa::path(
    get,
    path = "/api/v2/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3 document (not enveloped)", content_type = "application/json"))
)]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(DOC.clone())
}
