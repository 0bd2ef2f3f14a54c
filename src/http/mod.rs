//! The REST API: OCP's four operations, task management and the inventory,
//! with OCP's envelope on every response.
//!
//! Layout: [`wire`] (OCP's wire types: envelope, error body, codes),
//! [`envelope`] (trace id, span and the envelope around every answer),
//! [`error`] (the one error type that becomes a response),
//! [`extract`] (extractors whose rejections are envelopes), one module per
//! resource ([`ops`], [`fleet`], [`tasks`], [`inventory`], [`iam`]), [`openapi`],
//! [`health`] and the operator console ([`console`]).
//!
//! Every route but the health probes and `/metrics` is in [`api_routes`],
//! which [`router`] wraps in the authentication middleware (HTTP Basic, see
//! `crate::auth`); each route then states the permission it needs with
//! `.require(..)`. The console's session layer (`console::session`)
//! runs before HTTP Basic, so a console session is an alternative to it;
//! the console's page, assets and sign-in are open. `/healthz` and `/readyz` are open; `/metrics` is open
//! unless `AuthConfig::metrics_auth`, which makes it need any authenticated
//! user.

pub mod console;
pub mod envelope;
pub mod error;
pub mod extract;
pub mod fleet;
pub mod health;
pub mod iam;
pub mod inventory;
pub mod openapi;
pub mod ops;
mod retry;
pub mod tasks;
pub mod wire;

use crate::auth::{self, AuthConfig, Authenticator};
use axum::extract::DefaultBodyLimit;
use axum::Router;
use sqlx::PgPool;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use utoipa_axum::router::OpenApiRouter;

/// Largest request body accepted (1 MiB); larger is a 413.
pub const BODY_LIMIT: usize = 1 << 20;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// This server's address: the envelope's `server` and new tasks'
    /// `executor`.
    pub server: String,
    /// Checks the credentials of every API request.
    pub auth: Authenticator,
}

impl AppState {
    /// State with the default authentication settings.
    pub fn new(pool: PgPool, server: impl Into<String>) -> Self {
        AppState {
            auth: Authenticator::new(pool.clone(), AuthConfig::default()),
            pool,
            server: server.into(),
        }
    }

    /// The same state with other authentication settings (and a fresh
    /// cache and throttle).
    pub fn with_auth_config(mut self, config: AuthConfig) -> Self {
        self.auth = Authenticator::new(self.pool.clone(), config);
        self
    }
}

/// Every route that needs authentication, each declared once with its
/// document (utoipa-axum's `routes!`): the operations, task management, the
/// inventory, users and roles.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(ops::routes())
        .merge(fleet::routes())
        .merge(tasks::routes())
        .merge(inventory::routes())
        .merge(iam::routes())
}

/// The whole application, wrapped by [`layered`]: [`api_routes`] behind
/// authentication, the probes open, `/metrics` behind authentication only
/// when the configuration says so.
pub fn router(state: AppState) -> Router {
    let authenticate =
        || axum::middleware::from_fn_with_state(state.auth.clone(), auth::authenticate);
    let metrics = Router::from(health::metrics_routes());
    let metrics = if state.auth.config().metrics_auth {
        metrics.layer(authenticate())
    } else {
        metrics
    };
    // The 405 fallback goes on before the layer, so that a wrong method on
    // an API route is refused only after authentication too (layered()
    // leaves a fallback already set as it is).
    // The console's session cookie is an alternative to HTTP Basic: its
    // layer runs first and, when it authenticates, Basic is not asked for.
    let routes = Router::from(api_routes())
        .merge(console::api_routes())
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(authenticate())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            console::session::authenticate,
        ))
        .merge(console::public_routes())
        .merge(Router::from(health::routes()))
        .merge(Router::from(openapi::routes()))
        .merge(metrics);
    layered(routes, state)
}

/// Wraps routes the way the application is wrapped: the 404 and 405
/// fallbacks, the body limit, the panic catcher, the retry of safe requests
/// after a connection fault and, outermost, the trace id,
/// span and envelope around everything.
pub fn layered(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(error::route_not_found)
        // After every route is added: it applies to the routes present.
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(error::panic_response))
        // Inside the envelope (one trace id for every attempt), around
        // authentication, whose user lookup reads the database too.
        .layer(axum::middleware::from_fn(retry::layer))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            envelope::layer,
        ))
        .with_state(state)
}

/// Serves the application on `listener` until `shutdown` fires, then
/// finishes the requests in flight. Each request knows its peer address
/// (`ConnectInfo<SocketAddr>`), which the failed-login throttle keys on.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, server = %state.server, "HTTP API listening");
    }
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
