//! The HTTP layer's error: the one error type that becomes a response. Maps
//! engine refusals, authentication and permission refusals and store
//! failures to OCP-style codes; 5xx details are logged with the trace id,
//! never returned.

pub use super::wire::{code, code_for_status, ErrorBody, SubError};
use super::wire::{payload_response, Payload};
use crate::auth;
use crate::db::{DbFault, Fault};
use crate::engine;
use crate::model::transitions::Refusal;
use crate::operations;
use crate::store;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Marks a response that answers a connection fault, so that
/// `http::retry` can run a safe request again.
#[derive(Debug, Clone, Copy)]
pub struct DbFaulted(pub Fault);

/// A refusal the caller can act on: a status, a code and a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub target: Option<String>,
    pub sub_errors: Vec<SubError>,
}

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A 4xx (or 503) with an OCP-style code.
    #[error("{} {}: {}", .0.status, .0.code, .0.message)]
    Refused(Box<Refused>),
    /// An engine error: refusals become 400, missing things 404, a busy
    /// target 409, the rest 500.
    #[error(transparent)]
    Engine(#[from] engine::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    /// An authentication, permission or user-management error: 401 (with
    /// `WWW-Authenticate`), 403, 429 (with `Retry-After`), 400, 404, 409, or
    /// 500 for a store or hashing failure.
    #[error(transparent)]
    Auth(#[from] auth::Error),
    /// A failure of the server itself: 500, details logged.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An operation's refusal becomes a response naming the path parameter at
/// fault; its engine and store failures answer as those do.
impl From<operations::Error> for Error {
    fn from(e: operations::Error) -> Self {
        use operations::Error as Op;
        let message = e.to_string();
        let (status, code, target) = match e {
            Op::Engine(e) => return Error::Engine(e),
            Op::Store(e) => return Error::Store(e),
            Op::ClusterNotFound(_) => (StatusCode::NOT_FOUND, code::CLUSTER_NOT_FOUND, "id"),
            Op::ServerNotFound(_) | Op::ServerNotInCluster { .. } => {
                (StatusCode::NOT_FOUND, code::SERVER_NOT_FOUND, "serverId")
            }
            Op::HostNotFound(_) => (StatusCode::NOT_FOUND, code::HOST_NOT_FOUND, "hostId"),
            Op::ServerState { .. } => (
                StatusCode::BAD_REQUEST,
                code::SERVER_STATE_INVALID,
                "serverId",
            ),
            Op::AgentRestarting(_) => {
                (StatusCode::BAD_REQUEST, code::AGENT_STATE_INVALID, "hostId")
            }
            Op::ZoneNotFound { .. } => (StatusCode::NOT_FOUND, code::ZONE_NOT_FOUND, "zoneName"),
            Op::Invalid {
                field,
                value,
                message,
            } => return Error::invalid("body", field, value, message),
            Op::KeyReused(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                code::IDEMPOTENCY_KEY_REUSED,
                "Idempotency-Key",
            ),
        };
        Error::refused(status, code, message).with_target(target)
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(e.into())
    }
}

/// The connection fault behind an error, if PostgreSQL's connection failed
/// rather than the request (see `db::retry`).
impl DbFault for Error {
    fn sqlx_error(&self) -> Option<&sqlx::Error> {
        match self {
            Error::Store(e) => e.sqlx_error(),
            Error::Engine(e) => e.sqlx_error(),
            Error::Auth(e) => e.sqlx_error(),
            _ => None,
        }
    }
}

impl Error {
    pub fn refused(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Error::Refused(Box::new(Refused {
            status,
            code,
            message: message.into(),
            target: None,
            sub_errors: Vec::new(),
        }))
    }

    /// Names the field, parameter or header at fault (a refusal only).
    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        if let Error::Refused(r) = &mut self {
            r.target = Some(target.into());
        }
        self
    }

    /// Adds one invalid field (a refusal only).
    pub fn with_sub_error(mut self, sub: SubError) -> Self {
        if let Error::Refused(r) = &mut self {
            r.sub_errors.push(sub);
        }
        self
    }

    /// 400 naming one invalid field of `object` (`body`, `query`, `path`,
    /// `header`).
    pub fn invalid(
        object: &str,
        field: &str,
        rejected: impl Into<serde_json::Value>,
        message: impl Into<String>,
    ) -> Self {
        let message = message.into();
        Error::refused(
            StatusCode::BAD_REQUEST,
            code::ILLEGAL_ARGUMENT,
            format!("{field}: {message}"),
        )
        .with_target(field)
        .with_sub_error(SubError {
            object: object.to_string(),
            field: field.to_string(),
            rejected_value: rejected.into(),
            message,
        })
    }

    /// 400 with several invalid fields; the first is the target.
    pub fn invalid_fields(subs: Vec<SubError>) -> Self {
        let message = subs
            .iter()
            .map(|s| format!("{}: {}", s.field, s.message))
            .collect::<Vec<_>>()
            .join("; ");
        let target = subs.first().map(|s| s.field.clone());
        Error::Refused(Box::new(Refused {
            status: StatusCode::BAD_REQUEST,
            code: code::ILLEGAL_ARGUMENT,
            message,
            target,
            sub_errors: subs,
        }))
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Error::refused(StatusCode::NOT_FOUND, code, message)
    }

    /// A text value PostgreSQL cannot store (NUL): the caller's mistake.
    fn invalid_text(&self) -> bool {
        match self {
            Error::Store(e) | Error::Engine(engine::Error::Store(e)) => e.is_invalid_text(),
            _ => false,
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        if self.invalid_text() {
            return StatusCode::BAD_REQUEST;
        }
        if self.fault().is_some() {
            // The server recovers from it by itself: never a 500.
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        match self {
            Error::Refused(r) => r.status,
            Error::Engine(e) => match e {
                engine::Error::Refused(_) => StatusCode::BAD_REQUEST,
                engine::Error::TaskNotFound(_)
                | engine::Error::SubtaskNotFound { .. }
                | engine::Error::KeyedTaskNotFound(_) => StatusCode::NOT_FOUND,
                engine::Error::TargetBusy(_) => StatusCode::CONFLICT,
                engine::Error::Store(_) | engine::Error::Dag(_) | engine::Error::RunLost(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
            Error::Auth(e) => match e {
                auth::Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
                auth::Error::Forbidden(_) => StatusCode::FORBIDDEN,
                auth::Error::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
                auth::Error::Invalid { .. } => StatusCode::BAD_REQUEST,
                auth::Error::UserNotFound(_) => StatusCode::NOT_FOUND,
                auth::Error::UserExists(_) | auth::Error::Conflict(_) => StatusCode::CONFLICT,
                auth::Error::Hash(_) | auth::Error::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Error::Store(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn body(self) -> ErrorBody {
        let status = self.status();
        if self.invalid_text() {
            return ErrorBody {
                code: code::ILLEGAL_ARGUMENT.to_string(),
                message: "a value contains a NUL character, which cannot be stored".to_string(),
                target: None,
                sub_errors: Vec::new(),
            };
        }
        if let Some(fault) = self.fault() {
            tracing::warn!(error = %self, ?fault, "PostgreSQL connection fault");
            let message = match fault {
                Fault::Unclear => {
                    "the connection to the database broke before the answer came, so \
                     whether the request took effect is unknown; retry it (an operation \
                     retried with the same Idempotency-Key returns its task if it was \
                     created)"
                }
                Fault::NotCommitted | Fault::NoConnection => {
                    "the database is unreachable for now and the request changed nothing; \
                     retry it"
                }
            };
            return ErrorBody {
                code: code::SERVICE_UNAVAILABLE.to_string(),
                message: message.to_string(),
                target: None,
                sub_errors: Vec::new(),
            };
        }
        if status.is_server_error() && !matches!(&self, Error::Refused(_)) {
            // The details go to the log (inside the request's span, so with
            // its trace id), never to the caller.
            tracing::error!(error = %self, "internal error");
            return ErrorBody {
                code: code::INTERNAL_ERROR.to_string(),
                message: "internal server error; the server log has the details under this \
                          request's traceId"
                    .to_string(),
                target: None,
                sub_errors: Vec::new(),
            };
        }
        let (code, message, target, sub_errors) = match self {
            Error::Refused(r) => (r.code, r.message, r.target, r.sub_errors),
            Error::Engine(e) => {
                let message = e.to_string();
                let code = match &e {
                    engine::Error::Refused(r) => refusal_code(r),
                    engine::Error::SubtaskNotFound { .. } => code::SUBTASK_NOT_FOUND,
                    engine::Error::TaskNotFound(_) | engine::Error::KeyedTaskNotFound(_) => {
                        code::TASK_NOT_FOUND
                    }
                    engine::Error::TargetBusy(_) => code::TARGET_BUSY,
                    engine::Error::Store(_) | engine::Error::Dag(_) | engine::Error::RunLost(_) => {
                        code::INTERNAL_ERROR
                    }
                };
                (code, message, None, Vec::new())
            }
            Error::Auth(auth::Error::Invalid { field, message }) => {
                // The rejected value is never echoed: it may be a password.
                return Error::invalid("body", &field, serde_json::Value::Null, message).body();
            }
            Error::Auth(e) => {
                let (code, target) = match &e {
                    auth::Error::UserExists(_) => (code::DUPLICATE, Some("name".to_string())),
                    auth::Error::UserNotFound(_) => (code::USER_NOT_FOUND, None),
                    _ => (code_for_status(status), None),
                };
                (code, e.to_string(), target, Vec::new())
            }
            other => (code_for_status(status), other.to_string(), None, Vec::new()),
        };
        ErrorBody {
            code: code.to_string(),
            message,
            target,
            sub_errors,
        }
    }
}

/// The code of each state-machine refusal.
pub fn refusal_code(r: &Refusal) -> &'static str {
    match r {
        Refusal::TaskState { .. } => code::TASK_STATE_INVALID,
        Refusal::ProhibitRollback => code::TASK_PROHIBIT_ROLLBACK,
        Refusal::SubtaskState { .. } => code::SUBTASK_STATE_INVALID,
        Refusal::CannotSkip(_) => code::SUBTASK_CANNOT_SKIP,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        // The headers a 401 and a 429 must carry.
        let extra = match &self {
            Error::Auth(auth::Error::Unauthenticated(_)) => {
                HeaderValue::from_str(&format!("Basic realm=\"{}\"", auth::REALM))
                    .ok()
                    .map(|v| (header::WWW_AUTHENTICATE, v))
            }
            Error::Auth(auth::Error::Throttled { retry_after }) => Some((
                header::RETRY_AFTER,
                HeaderValue::from(auth::retry_after_secs(*retry_after)),
            )),
            e if e.fault().is_some() => Some((header::RETRY_AFTER, HeaderValue::from(1))),
            _ => None,
        };
        let fault = self.fault();
        let mut resp = payload_response(status, Payload::Error(self.body()));
        if let Some((name, value)) = extra {
            resp.headers_mut().insert(name, value);
        }
        if let Some(f) = fault {
            resp.extensions_mut().insert(DbFaulted(f));
        }
        resp
    }
}

/// Authentication refusals answer in the envelope like every other error.
impl IntoResponse for auth::Error {
    fn into_response(self) -> Response {
        Error::from(self).into_response()
    }
}

/// The router's fallback: an unknown route is a 404 in the envelope.
pub(crate) async fn route_not_found(uri: axum::http::Uri) -> Error {
    Error::not_found(code::NOT_FOUND, format!("no route for {}", uri.path()))
}

/// A known route asked with another method: 405 in the envelope.
pub(crate) async fn method_not_allowed(method: axum::http::Method) -> Error {
    Error::refused(
        StatusCode::METHOD_NOT_ALLOWED,
        code::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on this route"),
    )
}

/// The last line of defence: a handler panicked. Logged; a 500 envelope.
pub(crate) fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    Error::Internal(format!("handler panicked: {detail}")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SubtaskId, TaskId, TaskOperation, TaskStatus};

    #[test]
    fn engine_errors_map_to_ocp_codes() {
        let e = Error::from(engine::Error::Refused(Refusal::TaskState {
            status: TaskStatus::Running,
            operation: TaskOperation::Execute,
            wanted: "x",
        }));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.body().code, code::TASK_STATE_INVALID);
        let e = Error::from(engine::Error::SubtaskNotFound {
            task: TaskId(1),
            subtask: SubtaskId(3),
        });
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert_eq!(e.body().code, code::SUBTASK_NOT_FOUND);
        let e = Error::from(engine::Error::TargetBusy(engine::Busy {
            key: "server:1".into(),
            holder: Some(crate::model::TaskId(7)),
        }));
        assert_eq!(e.status(), StatusCode::CONFLICT);
        assert_eq!(e.body().code, code::TARGET_BUSY);
    }

    #[tokio::test]
    async fn a_lost_run_is_a_server_fault_not_a_404() {
        let joined = tokio::spawn(async { panic!("the run panicked") }).await;
        let lost = joined.expect_err("the task panicked");
        let e = Error::from(engine::Error::RunLost(lost));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.body().code, code::INTERNAL_ERROR);
    }

    #[test]
    fn internal_details_are_not_returned() {
        let e = Error::Internal("secret connection string".into());
        let body = e.body();
        assert_eq!(body.code, code::INTERNAL_ERROR);
        assert!(!body.message.contains("secret"));
    }

    #[test]
    fn invalid_names_the_field() {
        let Error::Refused(r) = Error::invalid("query", "size", "5000", "at most 2000") else {
            panic!("a refusal");
        };
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.target.as_deref(), Some("size"));
        assert_eq!(r.sub_errors[0].rejected_value, serde_json::json!("5000"));
    }
}
