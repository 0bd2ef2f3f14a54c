//! Safe requests (GET, HEAD) that failed for PostgreSQL's connection are
//! run again, whole, on fresh connections, so a terminated backend or a cut
//! network costs them time, not an error: they change nothing, so a repeat
//! is harmless whatever the fault left behind. Within `db::retry::RETRY_FOR`
//! (an outage shorter than that is waited out); then the fault's 503 goes
//! out. Writes retry below, where it is known what a repeat would do
//! (`http::ops`).

use super::error::DbFaulted;
use axum::body::Body;
use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::{Duration, Instant};

pub(crate) async fn layer(req: Request, next: Next) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, super::BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            return super::error::Error::refused(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                super::wire::code::PAYLOAD_TOO_LARGE,
                format!("the request body could not be read: {e}"),
            )
            .into_response()
        }
    };
    let started = Instant::now();
    let mut backoff = Duration::from_millis(25);
    loop {
        let req = Request::from_parts(parts.clone(), Body::from(body.clone()));
        let resp = next.clone().run(req).await;
        let Some(DbFaulted(fault)) = resp.extensions().get::<DbFaulted>().copied() else {
            return resp;
        };
        // The pool already waited its acquire timeout for a connection.
        if fault == crate::db::Fault::NoConnection
            || started.elapsed() + backoff >= crate::db::retry::RETRY_FOR
        {
            return resp;
        }
        tracing::info!(
            ?fault,
            "connection fault under a safe request; running it again"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
