//! The operator console: a browser UI served at `/console` from assets
//! compiled into the binary, its sign-in sessions and their CSRF defence,
//! and the few read endpoints it needs beyond the REST API.
//!
//! Layout: [`session`] (sign-in, sign-out, the session cookie, and the
//! middleware that turns a session cookie plus its CSRF token into the
//! request's `Principal`), [`views`] (a task with what the state machine
//! allows, why it waits and what failed; the latest tasks of each target),
//! [`assets`] (the HTML, CSS and ES modules).
//!
//! The console calls taskd's own JSON API with its session; every
//! permission check stays on the server, in the routes' guards.

pub mod assets;
pub mod session;
pub mod views;

use crate::auth::{Permission, RequireExt};
use crate::http::AppState;
use axum::routing::{get, post};
use axum::Router;

/// Routes that need no authentication: the assets and the sign-in.
pub fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(assets::index))
        .route("/console/", get(assets::index))
        .route("/console/assets/{file}", get(assets::asset))
        .route("/console/api/sign-in", post(session::sign_in))
}

/// Routes behind authentication (a session or HTTP Basic), each with the
/// permission it needs.
pub fn api_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/console/api/session",
            get(session::current).require(Permission::InventoryRead),
        )
        .route(
            "/console/api/sign-out",
            post(session::sign_out).require(Permission::InventoryRead),
        )
        .route(
            "/console/api/tasks/{taskInstanceId}",
            get(views::task_detail).require(Permission::TaskRead),
        )
        .route(
            "/console/api/server-operations",
            get(views::server_operations).require(Permission::InventoryRead),
        )
        .route(
            "/console/api/latest-tasks",
            get(views::latest_tasks).require(Permission::TaskRead),
        )
}
