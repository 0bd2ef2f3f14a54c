//! OCP's response envelope, written once: the middleware that gives every
//! request its trace id and span and wraps whatever a handler (or axum, or a
//! layer) answered into `{data | error, successful, timestamp, duration,
//! status, traceId, server}`.
//!
//! The trace id is not tower-http's request-id layers' job: they keep any
//! value a caller sent (this replaces an invalid one and reads W3C
//! `traceparent` too) and would still leave the id to be put in the span
//! and the body here.

use super::wire::{payload_response, ErrorBody, Payload, SubError};
pub use super::wire::{EmptyEnvelope, Envelope, ErrorEnvelope, PageInfo, Paged};
use super::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Local, SecondsFormat, Utc};
use serde::Serialize;
use std::time::Instant;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The request and response header carrying the trace id.
pub const TRACE_HEADER: &str = "x-trace-id";

/// Longest trace id accepted from a caller.
pub const TRACE_ID_MAX: usize = 64;

/// What the envelope middleware knows of the request being served; handlers
/// read it with the `RequestCtx` extractor.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub trace_id: String,
    pub started: Instant,
}

/// A successful answer carrying `data`.
#[derive(Debug)]
pub struct Success<T>(pub T);

impl<T: Serialize> IntoResponse for Success<T> {
    fn into_response(self) -> Response {
        match serde_json::to_value(&self.0) {
            Ok(v) => payload_response(StatusCode::OK, Payload::Data(Some(v))),
            Err(e) => super::error::Error::Internal(format!("cannot serialize a response: {e}"))
                .into_response(),
        }
    }
}

/// A successful answer without `data`.
#[derive(Debug, Clone, Copy)]
pub struct NoData;

impl IntoResponse for NoData {
    fn into_response(self) -> Response {
        payload_response(StatusCode::OK, Payload::Data(None))
    }
}

/// A time as OCP shows it: RFC 3339 with milliseconds and the server's
/// offset, e.g. `2021-09-05T22:46:20.220+08:00`.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.with_timezone(&Local)
        .to_rfc3339_opts(SecondsFormat::Millis, false)
}

/// serde `serialize_with` for a time.
pub fn ser_time<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(t))
}

/// serde `serialize_with` for an optional time (pair it with
/// `skip_serializing_if = "Option::is_none"`).
pub fn ser_opt_time<S: serde::Serializer>(
    t: &Option<DateTime<Utc>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&format_time(t)),
        None => s.serialize_none(),
    }
}

/// True for a caller-sent trace id we keep: 1 to 64 of `[A-Za-z0-9._-]`.
pub fn valid_trace_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= TRACE_ID_MAX
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A new trace id: 16 lower-case hex digits, like OCP's.
pub fn new_trace_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The trace id of a request and, when its caller sent a valid
/// `traceparent`, the caller's span: `X-Trace-Id` when valid names the
/// trace (the caller's span is then its parent only when in that trace);
/// otherwise `traceparent`'s trace id (32 hex digits) is the trace id;
/// otherwise a new one.
fn request_trace(
    headers: &axum::http::HeaderMap,
) -> (String, Option<opentelemetry::trace::SpanContext>) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let parent =
        header(crate::telemetry::TRACEPARENT_HEADER).and_then(crate::telemetry::parse_traceparent);
    match header(TRACE_HEADER).filter(|s| valid_trace_id(s)) {
        Some(t) => {
            let same = |p: &opentelemetry::trace::SpanContext| {
                p.trace_id() == crate::telemetry::otel_trace_id(t)
            };
            (t.to_owned(), parent.filter(same))
        }
        None => match parent {
            Some(p) => (p.trace_id().to_string(), Some(p)),
            None => (new_trace_id(), None),
        },
    }
}

/// The middleware: trace id, span, and the envelope around the answer.
pub(crate) async fn layer(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let (trace_id, caller) = request_trace(req.headers());
    let span = tracing::info_span!(
        parent: None,
        "request",
        trace_id = %trace_id,
        method = %req.method(),
        path = %req.uri().path(),
        // Recorded by the auth middleware once the caller is known. No
        // header is ever a field of this span: the credentials stay out of
        // the logs.
        user = tracing::field::Empty,
    );
    match caller {
        Some(parent) => crate::telemetry::start_under(&span, parent),
        None => crate::telemetry::start_in_trace(&span, &trace_id),
    }
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    span.set_attribute("http.route", route.clone());
    let otel_span = span.clone();
    req.extensions_mut().insert(RequestCtx {
        trace_id: trace_id.clone(),
        started,
    });
    async move {
        let resp = next.run(req).await;
        let resp = wrap(resp, &trace_id, started, &state.server).await;
        let status = resp.status().as_u16();
        otel_span.set_attribute("http.response.status_code", i64::from(status));
        let duration_ms = started.elapsed().as_millis() as u64;
        let m = &crate::metrics::METRICS;
        m.http_requests
            .with_label_values(&[route.as_str(), method.as_str(), &status.to_string()])
            .inc();
        m.http_latency
            .with_label_values(&[route.as_str(), method.as_str()])
            .observe(started.elapsed().as_secs_f64());
        if status >= 500 {
            tracing::warn!(status, duration_ms, "request failed");
        } else {
            tracing::info!(status, duration_ms, "request served");
        }
        resp
    }
    .instrument(span)
    .await
}

/// Longest body of a foreign error response read to reuse as its message.
const FOREIGN_BODY_MAX: usize = 4096;

async fn wrap(resp: Response, trace_id: &str, started: Instant, server: &str) -> Response {
    let (mut parts, body) = resp.into_parts();
    let status = parts.status;
    let payload = match parts.extensions.remove::<Payload>() {
        Some(p) => p,
        // A success that is not ours (the OpenAPI document) passes as is.
        None if !status.is_client_error() && !status.is_server_error() => {
            set_trace_header(&mut parts.headers, trace_id);
            return Response::from_parts(parts, body);
        }
        // An error answered by axum or a layer: keep its text as the message.
        None => Payload::Error(foreign_error(status, body).await),
    };
    let (data, error) = match payload {
        Payload::Data(d) => (d, None),
        Payload::Error(e) => (None, Some(e)),
    };
    let envelope = Envelope {
        successful: error.is_none(),
        data,
        error,
        timestamp: format_time(&Utc::now()),
        duration: started.elapsed().as_millis() as u64,
        status: status.as_u16(),
        trace_id: trace_id.to_string(),
        server: server.to_string(),
    };
    let bytes = match serde_json::to_vec(&envelope) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize the envelope");
            parts.status = StatusCode::INTERNAL_SERVER_ERROR;
            format!(
                "{{\"successful\":false,\"status\":500,\"traceId\":\"{trace_id}\",\
                 \"error\":{{\"code\":\"INTERNAL_ERROR\",\"message\":\"internal error\"}}}}"
            )
            .into_bytes()
        }
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    set_trace_header(&mut parts.headers, trace_id);
    Response::from_parts(parts, Body::from(bytes))
}

fn set_trace_header(headers: &mut axum::http::HeaderMap, trace_id: &str) {
    if let Ok(v) = HeaderValue::from_str(trace_id) {
        headers.insert(TRACE_HEADER, v);
    }
}

async fn foreign_error(status: StatusCode, body: Body) -> ErrorBody {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The body limit layer refused a declared length before any handler.
        return ErrorBody {
            code: super::error::code::PAYLOAD_TOO_LARGE.to_string(),
            message: format!(
                "the request body is larger than {} bytes",
                super::BODY_LIMIT
            ),
            target: Some("body".to_string()),
            sub_errors: Vec::new(),
        };
    }
    let text = axum::body::to_bytes(body, FOREIGN_BODY_MAX)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !status.is_server_error());
    let message = text.unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string()
    });
    ErrorBody {
        code: super::error::code_for_status(status).to_string(),
        message,
        target: None,
        sub_errors: Vec::<SubError>::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_validated() {
        assert!(valid_trace_id("1f3af8df30ae4733"));
        assert!(valid_trace_id("a.b_c-D"));
        assert!(!valid_trace_id(""));
        assert!(!valid_trace_id("has space"));
        assert!(!valid_trace_id("ünï"));
        assert!(!valid_trace_id(&"x".repeat(65)));
        assert!(valid_trace_id(&"x".repeat(64)));
        let t = new_trace_id();
        assert_eq!(t.len(), 16);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn pages_count_up() {
        assert_eq!(Paged::<u8>::new(vec![], 0, 1, 10).page.total_pages, 0);
        assert_eq!(Paged::<u8>::new(vec![], 10, 1, 10).page.total_pages, 1);
        assert_eq!(Paged::<u8>::new(vec![], 11, 2, 10).page.total_pages, 2);
    }

    #[test]
    fn times_have_millis_and_offset() {
        let t =
            DateTime::parse_from_rfc3339("2021-09-05T14:46:20.22Z").map(|t| t.with_timezone(&Utc));
        let s = format_time(&t.expect("valid time"));
        // 2021-09-05T..:46:20.220+hh:mm
        assert!(s.contains(":46:20.220"), "{s}");
        assert!(
            s.ends_with(":00") || s.ends_with(":30") || s.ends_with(":45"),
            "{s}"
        );
        assert!(DateTime::parse_from_rfc3339(&s).is_ok());
    }
}
