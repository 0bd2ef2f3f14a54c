//! OCP's wire types, in one file: the envelope and its page, the error
//! body and its codes, and the payload a handler leaves for the envelope
//! middleware. Both `envelope` (which writes them) and `error` (which fills
//! them) depend on this module and not on each other's types.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a handler produced; the middleware turns it into the envelope.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Data(Option<serde_json::Value>),
    Error(ErrorBody),
}

pub(crate) fn payload_response(status: StatusCode, payload: Payload) -> Response {
    let mut resp = status.into_response();
    resp.extensions_mut().insert(payload);
    resp
}

/// The envelope around every answer. `data` is present on success (unless
/// the operation returns nothing), `error` on failure.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<T> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    /// True when the request succeeded.
    pub successful: bool,
    /// When the server finished the request (RFC 3339, milliseconds, offset).
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: String,
    /// Time the server took, in milliseconds.
    pub duration: u64,
    /// The HTTP status code.
    pub status: u16,
    /// Trace id of the request, for finding it in the logs.
    pub trace_id: String,
    /// Address of the server that answered.
    pub server: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// The envelope of a failed request (documentation shape of [`Envelope`]).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorEnvelope {
    /// Always false.
    pub successful: bool,
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: String,
    pub duration: u64,
    pub status: u16,
    pub trace_id: String,
    pub server: String,
    pub error: ErrorBody,
}

/// The envelope of a successful request that returns no data.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmptyEnvelope {
    /// Always true.
    pub successful: bool,
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: String,
    pub duration: u64,
    pub status: u16,
    pub trace_id: String,
    pub server: String,
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Paged<T> {
    pub contents: Vec<T>,
    pub page: PageInfo,
}

/// Where a page sits in the whole list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageInfo {
    /// Items in the whole list.
    pub total_elements: i64,
    /// Pages of `size` items in the whole list.
    pub total_pages: i64,
    /// This page's number, starting at 1.
    pub number: i64,
    /// Items per page asked for.
    pub size: i64,
}

impl<T> Paged<T> {
    /// A page (1-based `number`) of a list of `total` items.
    pub fn new(contents: Vec<T>, total: i64, number: i64, size: i64) -> Self {
        let total_pages = if size > 0 {
            (total + size - 1) / size
        } else {
            0
        };
        Paged {
            contents,
            page: PageInfo {
                total_elements: total,
                total_pages,
                number,
                size,
            },
        }
    }
}

/// `error` of a failed request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `TASK_STATE_INVALID`, `ILLEGAL_ARGUMENT`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// The request field, parameter or header at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// One entry per invalid field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sub_errors: Vec<SubError>,
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubError {
    /// What holds the field: `body`, `query`, `path` or `header`.
    pub object: String,
    /// The field, e.g. `size` or `zones[0].servers[1].sqlPort`.
    pub field: String,
    /// The value refused (null when missing or unreadable).
    pub rejected_value: serde_json::Value,
    pub message: String,
}

/// Codes, in one place.
pub mod code {
    pub const ILLEGAL_ARGUMENT: &str = "ILLEGAL_ARGUMENT";
    pub const MALFORMED_JSON: &str = "MALFORMED_JSON";
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";
    pub const PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "UNSUPPORTED_MEDIA_TYPE";
    pub const CONFLICT: &str = "CONFLICT";
    pub const INTERNAL_ERROR: &str = "INTERNAL_ERROR";
    pub const SERVICE_UNAVAILABLE: &str = "SERVICE_UNAVAILABLE";
    pub const TASK_NOT_FOUND: &str = "TASK_NOT_FOUND";
    pub const SUBTASK_NOT_FOUND: &str = "SUBTASK_NOT_FOUND";
    pub const TASK_STATE_INVALID: &str = "TASK_STATE_INVALID";
    pub const TASK_PROHIBIT_ROLLBACK: &str = "TASK_PROHIBIT_ROLLBACK";
    pub const SUBTASK_STATE_INVALID: &str = "SUBTASK_STATE_INVALID";
    pub const SUBTASK_CANNOT_SKIP: &str = "SUBTASK_CANNOT_SKIP";
    pub const TARGET_BUSY: &str = "TARGET_BUSY";
    pub const IDEMPOTENCY_KEY_REUSED: &str = "IDEMPOTENCY_KEY_REUSED";
    pub const CLUSTER_NOT_FOUND: &str = "CLUSTER_NOT_FOUND";
    pub const SERVER_NOT_FOUND: &str = "SERVER_NOT_FOUND";
    pub const ZONE_NOT_FOUND: &str = "ZONE_NOT_FOUND";
    pub const HOST_NOT_FOUND: &str = "HOST_NOT_FOUND";
    pub const SERVER_STATE_INVALID: &str = "SERVER_STATE_INVALID";
    pub const AGENT_STATE_INVALID: &str = "AGENT_STATE_INVALID";
    pub const DUPLICATE: &str = "DUPLICATE";
    pub const UNAUTHORIZED: &str = "UNAUTHORIZED";
    pub const FORBIDDEN: &str = "FORBIDDEN";
    pub const TOO_MANY_REQUESTS: &str = "TOO_MANY_REQUESTS";
    pub const USER_NOT_FOUND: &str = "USER_NOT_FOUND";
}

/// The code of an error response that carries none of its own.
pub fn code_for_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => code::NOT_FOUND,
        StatusCode::UNAUTHORIZED => code::UNAUTHORIZED,
        StatusCode::FORBIDDEN => code::FORBIDDEN,
        StatusCode::TOO_MANY_REQUESTS => code::TOO_MANY_REQUESTS,
        StatusCode::METHOD_NOT_ALLOWED => code::METHOD_NOT_ALLOWED,
        StatusCode::PAYLOAD_TOO_LARGE => code::PAYLOAD_TOO_LARGE,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => code::UNSUPPORTED_MEDIA_TYPE,
        StatusCode::CONFLICT => code::CONFLICT,
        StatusCode::SERVICE_UNAVAILABLE => code::SERVICE_UNAVAILABLE,
        s if s.is_server_error() => code::INTERNAL_ERROR,
        _ => code::ILLEGAL_ARGUMENT,
    }
}
