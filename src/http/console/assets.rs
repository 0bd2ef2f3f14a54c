//! The console's HTML, CSS and ES modules, compiled into the binary (no
//! build step, no network): served with their content types, revalidated
//! on every load, and under a Content-Security-Policy that admits only
//! this server's own scripts, styles and requests.

use crate::http::error::{code, Error, Result};
use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Every asset: its name under `/console/assets/` and its text.
const ASSETS: &[(&str, &str)] = &[
    ("style.css", include_str!("assets/style.css")),
    ("app.js", include_str!("assets/app.js")),
    ("api.js", include_str!("assets/api.js")),
    ("ui.js", include_str!("assets/ui.js")),
    ("dag.js", include_str!("assets/dag.js")),
    ("tasks.js", include_str!("assets/tasks.js")),
    ("task.js", include_str!("assets/task.js")),
    ("inventory.js", include_str!("assets/inventory.js")),
];

const INDEX: &str = include_str!("assets/index.html");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        _ => "text/html; charset=utf-8",
    }
}

fn serve(name: &str, body: &'static str) -> Response {
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static(content_type(name))),
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            HeaderName::from_static("content-security-policy"),
            HeaderValue::from_static(CSP),
        ),
        (
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        ),
        (
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    (StatusCode::OK, headers, body).into_response()
}

/// `GET /console`: the single page.
pub async fn index() -> Response {
    serve("index.html", INDEX)
}

/// `GET /console/assets/{file}`.
pub async fn asset(Path(file): Path<String>) -> Result<Response> {
    ASSETS
        .iter()
        .find(|(name, _)| *name == file)
        .map(|(name, body)| serve(name, body))
        .ok_or_else(|| {
            Error::not_found(code::NOT_FOUND, format!("no console asset named {file:?}"))
        })
}
