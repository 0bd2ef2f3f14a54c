//! The OpenAPI 3 document, generated from the routers (each route's
//! `#[utoipa::path]`, collected by utoipa-axum) and the `ToSchema` types, served raw (tools read it as is) at
//! `/api/v2/openapi.json` without credentials (as the probes are: tools and
//! contract testers read it before they have any). Declares HTTP Basic as
//! the security scheme of every route but the probes and itself, and adds
//! the 401 and 429 answers to each.

use super::wire::{EmptyEnvelope, ErrorBody, ErrorEnvelope, PageInfo, SubError};
use super::{health, AppState};
use axum::Json;
use std::sync::LazyLock;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{RefOr, Response};
use utoipa::{Modify, OpenApi};
use utoipa_axum::{router::OpenApiRouter, routes};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "taskd",
        description = "OCP-compatible task API: OBServer and agent operations as DAG tasks, \
                       task management and the inventory. Every response is OCP's envelope \
                       (`data` or `error`, `successful`, `timestamp`, `duration`, `status`, \
                       `traceId`, `server`); send `X-Trace-Id` to choose the trace id, or a W3C \
                       `traceparent` to serve the request in the caller's trace (its \
                       trace id, 32 hex digits, is then the trace id). \
                       Every route but the probes needs HTTP Basic credentials of a user; \
                       what each user may do comes from its roles: ADMIN (everything, \
                       including inventory writes and users), CLUSTER_MANAGER (server \
                       operations, on every cluster or on listed ones), HOST_MANAGER (agent \
                       restarts), TASK_VIEWER (task reads), TASK_MANAGER (task actions). \
                       Any user may read the inventory; this document needs no credentials."
    ),
    components(schemas(ErrorEnvelope, EmptyEnvelope, ErrorBody, SubError, PageInfo)),
    security(("basic" = [])),
    tags(
        (name = "operations", description = "Restart, start and stop OBServers; restart host agents; taskd's extensions: restart a cluster zone by zone, restart, start or stop a zone, restart many hosts' agents"),
        (name = "tasks", description = "Task instances and their subtasks"),
        (name = "inventory", description = "Hosts, clusters, zones and servers (reads: any user; writes: ADMIN)"),
        (name = "iam", description = "Users and their roles (ADMIN only)"),
        (name = "health", description = "Probes (no authentication)"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

/// The `basic` security scheme, and the 401 and 429 answers of every
/// authenticated route.
struct BasicAuth;

impl Modify for BasicAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
        let error = || {
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name(
                    "ErrorEnvelope",
                )))
                .build()
        };
        let unauthorized = Response::builder()
            .description(
                "No credentials, or a wrong user name or password (UNAUTHORIZED); \
                 the answer carries `WWW-Authenticate: Basic realm=\"taskd\"`",
            )
            .content("application/json", error())
            .build();
        let throttled = Response::builder()
            .description(
                "Too many failed logins from this client (TOO_MANY_REQUESTS); \
                 `Retry-After` says when to try again",
            )
            .content("application/json", error())
            .build();
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                // The probes declare an empty (optional) requirement.
                let open = op
                    .security
                    .as_ref()
                    .is_some_and(|reqs| reqs.iter().any(|r| *r == SecurityRequirement::default()));
                if open {
                    continue;
                }
                let responses = &mut op.responses.responses;
                responses
                    .entry("401".into())
                    .or_insert_with(|| RefOr::T(unauthorized.clone()));
                responses
                    .entry("429".into())
                    .or_insert_with(|| RefOr::T(throttled.clone()));
            }
        }
    }
}

/// The whole document: [`ApiDoc`]'s info, schemas and tags with the paths
/// the routers declare (one declaration per route, see `http::api_routes`),
/// then the `basic` scheme's answers on every authenticated route.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(super::api_routes().into_openapi());
    doc.merge(health::routes().into_openapi());
    doc.merge(health::metrics_routes().into_openapi());
    doc.merge(routes().into_openapi());
    BasicAuth.modify(&mut doc);
    doc
}

/// The document's own route, open like the probes.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

static DOC: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(document);

/// The OpenAPI document itself.
#[utoipa::path(
    get,
    path = "/api/v2/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI 3 document (not enveloped)", content_type = "application/json"))
)]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(DOC.clone())
}
