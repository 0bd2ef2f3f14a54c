//! A mutating call as the agent parses it (strict bodies, defaults filled
//! in), and the agent's answers: errors with their status, replies with
//! the replay header.

use super::{AgentConfig, Result};
use crate::agent::process::{self};
use crate::agent::protocol::{
    ErrorBody, NoParams, Operation, StartObserver, StopObserver, REPLAYED_HEADER, SUPERSEDED,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// An operation's answer (or refusal) before it is recorded.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) message: String,
    /// The body's `code`, where the protocol defines one.
    pub(super) code: Option<&'static str>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            code: None,
        }
    }

    /// A call of attempt `key`, older than attempt `by` of its subtask.
    pub(super) fn superseded(key: &str, by: u64) -> ApiError {
        ApiError {
            status: StatusCode::GONE,
            message: format!(
                "attempt {key} is superseded: run_time {by} of its subtask has reached this agent"
            ),
            code: Some(SUPERSEDED),
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(super) fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    pub(super) fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub(super) fn shutting_down() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is shutting down",
        )
    }
}

impl From<process::Error> for ApiError {
    fn from(e: process::Error) -> Self {
        ApiError::internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
                code: self.code.map(str::to_string),
            }),
        )
            .into_response()
    }
}

/// The answer to a mutating call: new, or the replay of a recorded one.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) body: serde_json::Value,
    pub(super) replayed: bool,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body)).into_response();
        resp.headers_mut().insert(
            REPLAYED_HEADER,
            HeaderValue::from_static(if self.replayed { "true" } else { "false" }),
        );
        resp
    }
}

/// A parsed mutating request.
#[derive(Debug, Clone)]
pub(super) enum Request {
    ObserverStart(StartObserver),
    ObserverStop(StopObserver),
    ObserverActivate,
    ObserverDeactivate,
    PosProxyRestart,
    AgentStopAll,
    AgentStartAll,
}

impl Request {
    /// Parses the body of a mutating call of `op`: empty means `{}`.
    pub(super) fn parse(op: Operation, body: &[u8]) -> Result<Request, ApiError> {
        fn json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
            let body = if body.iter().all(u8::is_ascii_whitespace) {
                b"{}".as_slice()
            } else {
                body
            };
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("bad request body: {e}")))
        }
        let req = match op {
            Operation::ObserverStart => {
                let r: StartObserver = json(body)?;
                if r.port == Some(0) {
                    return Err(ApiError::bad_request("port must be between 1 and 65535"));
                }
                Request::ObserverStart(r)
            }
            Operation::ObserverStop => Request::ObserverStop(json(body)?),
            other => {
                json::<NoParams>(body)?;
                match other {
                    Operation::ObserverActivate => Request::ObserverActivate,
                    Operation::ObserverDeactivate => Request::ObserverDeactivate,
                    Operation::PosProxyRestart => Request::PosProxyRestart,
                    Operation::AgentStopAll => Request::AgentStopAll,
                    Operation::AgentStartAll => Request::AgentStartAll,
                    read => {
                        return Err(ApiError::bad_request(format!(
                            "{read} is not a mutating operation"
                        )))
                    }
                }
            }
        };
        Ok(req)
    }

    pub(super) fn operation(&self) -> Operation {
        match self {
            Request::ObserverStart(_) => Operation::ObserverStart,
            Request::ObserverStop(_) => Operation::ObserverStop,
            Request::ObserverActivate => Operation::ObserverActivate,
            Request::ObserverDeactivate => Operation::ObserverDeactivate,
            Request::PosProxyRestart => Operation::PosProxyRestart,
            Request::AgentStopAll => Operation::AgentStopAll,
            Request::AgentStartAll => Operation::AgentStartAll,
        }
    }

    /// Fills in the agent's defaults, so the record says what was done and
    /// `{}` is the same request as `{"port": <default>}`.
    pub(super) fn fill_defaults(&mut self, cfg: &AgentConfig) {
        match self {
            Request::ObserverStart(r) => {
                r.port.get_or_insert(cfg.observer_port);
            }
            Request::ObserverStop(r) => {
                let ms = u64::try_from(cfg.stop_timeout.as_millis()).unwrap_or(u64::MAX);
                r.timeout_ms.get_or_insert(ms);
            }
            _ => {}
        }
    }

    /// The request as recorded (after [`Request::fill_defaults`]).
    pub(super) fn canonical(&self) -> serde_json::Value {
        let v = match self {
            Request::ObserverStart(r) => serde_json::to_value(r),
            Request::ObserverStop(r) => serde_json::to_value(r),
            _ => serde_json::to_value(NoParams {}),
        };
        v.unwrap_or(serde_json::Value::Null)
    }
}

pub(super) fn to_json<T: Serialize>(v: &T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(v)
        .map_err(|e| ApiError::internal(format!("cannot encode the answer: {e}")))
}

pub(super) fn error_body(e: &ApiError) -> serde_json::Value {
    match e.code {
        None => serde_json::json!({ "error": e.message }),
        Some(code) => serde_json::json!({ "error": e.message, "code": code }),
    }
}

pub(super) fn error_reply(e: ApiError) -> Reply {
    Reply {
        status: e.status,
        body: error_body(&e),
        replayed: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_strictly() {
        assert!(matches!(
            Request::parse(Operation::ObserverStop, b""),
            Ok(Request::ObserverStop(StopObserver {
                force: false,
                timeout_ms: None
            }))
        ));
        assert!(Request::parse(Operation::ObserverStop, b"{nope").is_err());
        assert!(Request::parse(Operation::ObserverActivate, br#"{"x":1}"#).is_err());
        assert!(Request::parse(Operation::ObserverStart, br#"{"port":0}"#).is_err());
        assert!(Request::parse(Operation::AgentStatus, b"").is_err());
        let cfg = AgentConfig::new("/nonexistent");
        let canonical = |op, body: &[u8]| {
            Request::parse(op, body).map(|mut r| {
                r.fill_defaults(&cfg);
                r.canonical()
            })
        };
        let stop = canonical(Operation::ObserverStop, b"{}").ok();
        assert_eq!(
            stop,
            canonical(
                Operation::ObserverStop,
                br#"{"force":false,"timeout_ms":10000}"#
            )
            .ok()
        );
        assert_eq!(
            canonical(Operation::ObserverStart, b"").ok(),
            canonical(Operation::ObserverStart, br#"{"port":2881}"#).ok()
        );
    }
}
