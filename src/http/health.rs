//! Liveness and readiness probes, outside authentication: `/healthz` says
//! the process serves, `/readyz` that the database answers and every
//! migration this binary knows is applied. And `/metrics`, open unless the
//! server is configured to authenticate it (see `http::router`).

use super::envelope::{Envelope, ErrorEnvelope, Success};
use super::error::{code, Error, Result};
use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// `/metrics`, apart so that the router can put authentication on it.
pub(crate) fn metrics_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Prometheus metrics of this process, in the text exposition format.
///
/// Open by default; with `--metrics-auth` (`TASKD_METRICS_AUTH=true`) any
/// authenticated user may read it and others get a 401.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    security((), ("basic" = [])),
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, description = "With --metrics-auth only: no or wrong credentials (UNAUTHORIZED)", body = ErrorEnvelope),
    )
)]
pub async fn metrics() -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::METRICS.render(),
    )
}

/// What a probe found.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// UP.
    pub status: String,
}

/// The process is alive.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    security(()),
    responses((status = 200, description = "Alive", body = Envelope<Health>))
)]
pub async fn healthz() -> Success<Health> {
    Success(Health {
        status: "UP".into(),
    })
}

/// The database answers and its schema is current.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Envelope<Health>),
        (status = 503, description = "The database is unreachable or migrations are missing (SERVICE_UNAVAILABLE)", body = ErrorEnvelope),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Success<Health>> {
    let unavailable = |message: String| {
        Error::refused(
            StatusCode::SERVICE_UNAVAILABLE,
            code::SERVICE_UNAVAILABLE,
            message,
        )
    };
    match crate::db::migrations_applied(&state.pool).await {
        Ok(true) => Ok(Success(Health {
            status: "UP".into(),
        })),
        Ok(false) => Err(unavailable(
            "the database schema is behind this binary; migrations are pending".into(),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(unavailable("the database does not answer".into()))
        }
    }
}
