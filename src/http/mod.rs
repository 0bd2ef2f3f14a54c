//! The REST API: OCP's four operations, task management and the inventory,
//! with OCP's envelope on every response.
//!
//! Layout: [`envelope`] (trace id, span and the envelope around every
//! answer), [`error`] (the one error type that becomes a response),
//! [`extract`] (extractors whose rejections are envelopes), one module per
//! resource ([`ops`], [`tasks`], [`inventory`]), [`openapi`] and [`health`].
//!
//! Every route but the health probes is in [`api_routes`]; the coming
//! authentication layer wraps that group (and replaces the `Caller`
//! extractor's anonymous caller) without touching the handlers.

pub mod envelope;
pub mod error;
pub mod extract;
pub mod health;
pub mod inventory;
pub mod openapi;
pub mod ops;
pub mod tasks;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;

/// Largest request body accepted (1 MiB); larger is a 413.
pub const BODY_LIMIT: usize = 1 << 20;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// This server's address: the envelope's `server` and new tasks'
    /// `executor`.
    pub server: String,
}

impl AppState {
    pub fn new(pool: PgPool, server: impl Into<String>) -> Self {
        AppState {
            pool,
            server: server.into(),
        }
    }
}

/// Every route that needs authentication: the operations, task management,
/// the inventory and the OpenAPI document.
pub fn api_routes() -> Router<AppState> {
    Router::new()
        .merge(ops::routes())
        .merge(tasks::routes())
        .merge(inventory::routes())
        .route(
            "/api/v2/openapi.json",
            axum::routing::get(openapi::openapi_json),
        )
}

/// The whole application: the API and the probes, wrapped by [`layered`].
pub fn router(state: AppState) -> Router {
    layered(api_routes().merge(health::routes()), state)
}

/// Wraps routes the way the application is wrapped: the 404 and 405
/// fallbacks, the body limit, the panic catcher and, outermost, the trace id,
/// span and envelope around everything.
pub fn layered(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(error::route_not_found)
        // After every route is added: it applies to the routes present.
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            envelope::layer,
        ))
        .with_state(state)
}

/// Serves the application on `listener` until `shutdown` fires, then
/// finishes the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, server = %state.server, "HTTP API listening");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
