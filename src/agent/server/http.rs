//! The agent's HTTP routes: parsing headers and queries, then handing
//! each call to the agent; and serving them until shutdown.

use super::agent::{Agent, Opened};
use super::request::{ApiError, Request};
use super::{lock, Error, OnShutdown, Result, MAX_STALL};
use crate::agent::protocol::Fences;
use crate::agent::protocol::{
    check_key, paths, FaultSpec, FaultTable, Operation, Records, IDEMPOTENCY_KEY_HEADER,
};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
pub(super) type Shared = Arc<Agent>;

impl Opened {
    /// Serves the agent on `listener` until its shutdown token fires, then
    /// waits for the operation in progress, applies `on_shutdown` and saves
    /// the state.
    pub(super) async fn run(self, listener: TcpListener) -> Result<()> {
        let agent = self.agent.clone();
        let app = router(agent.clone());
        let stop = agent.shutdown.clone();
        tracing::info!(listen = %agent.listen, "agent serving");
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        // No call starts from here on; wait for the one in progress.
        let _ops = agent.ops.lock().await;
        if agent.cfg.on_shutdown == OnShutdown::Stop {
            agent.stop_everything().await;
        }
        let saved = agent.persist().await;
        tracing::info!(listen = %agent.listen, "agent stopped");
        served.map_err(Error::Serve)?;
        saved
    }
}

pub(super) fn router(agent: Shared) -> Router {
    Router::new()
        .route(paths::STATUS, get(agent_status))
        .route(paths::OBSERVER, get(observer_status))
        .route(paths::OBSERVER_START, mutating(Operation::ObserverStart))
        .route(paths::OBSERVER_STOP, mutating(Operation::ObserverStop))
        .route(
            paths::OBSERVER_ACTIVATE,
            mutating(Operation::ObserverActivate),
        )
        .route(
            paths::OBSERVER_DEACTIVATE,
            mutating(Operation::ObserverDeactivate),
        )
        .route(
            paths::POS_PROXY_RESTART,
            mutating(Operation::PosProxyRestart),
        )
        .route(paths::AGENT_STOP_ALL, mutating(Operation::AgentStopAll))
        .route(paths::AGENT_START_ALL, mutating(Operation::AgentStartAll))
        .route(
            paths::FAULTS,
            get(list_faults).post(set_fault).delete(clear_faults),
        )
        .route(paths::RECORDS, get(records))
        .route(paths::FENCES, get(fences))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .with_state(agent)
}

pub(super) fn mutating(op: Operation) -> MethodRouter<Shared> {
    post(
        move |State(agent): State<Shared>, headers: HeaderMap, body: Bytes| async move {
            handle_mutating(agent, op, headers, body).await
        },
    )
}

pub(super) async fn handle_mutating(
    agent: Shared,
    op: Operation,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = match headers.get(IDEMPOTENCY_KEY_HEADER) {
        None => {
            return ApiError::bad_request(format!("{op} needs an {IDEMPOTENCY_KEY_HEADER} header"))
                .into_response()
        }
        Some(v) => match v.to_str() {
            Ok(k) => k.to_string(),
            Err(_) => {
                return ApiError::bad_request(format!(
                    "the {IDEMPOTENCY_KEY_HEADER} header must be visible ASCII"
                ))
                .into_response()
            }
        },
    };
    if let Err(m) = check_key(&key) {
        return ApiError::bad_request(m).into_response();
    }
    let mut req = match Request::parse(op, &body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    req.fill_defaults(&agent.cfg);
    if let Err(e) = agent.admit(&key, op).await {
        return e.into_response();
    }
    // A task of its own: the operation completes (and is recorded) even if
    // the caller hangs up meanwhile.
    match tokio::spawn(agent.perform(key, req)).await {
        Ok(reply) => reply.into_response(),
        Err(e) => ApiError::internal(format!("{op} failed: {e}")).into_response(),
    }
}

pub(super) async fn agent_status(State(agent): State<Shared>) -> Response {
    if let Err(e) = agent.apply_fault(Operation::AgentStatus).await {
        return e.into_response();
    }
    Json(agent.agent_status().await).into_response()
}

pub(super) async fn observer_status(State(agent): State<Shared>) -> Response {
    if let Err(e) = agent.apply_fault(Operation::ObserverStatus).await {
        return e.into_response();
    }
    Json(agent.observer_status().await).into_response()
}

pub(super) async fn list_faults(State(agent): State<Shared>) -> Json<FaultTable> {
    Json(agent.fault_table())
}

pub(super) async fn set_fault(State(agent): State<Shared>, body: Bytes) -> Response {
    let spec: FaultSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return ApiError::bad_request(format!("bad fault: {e}")).into_response(),
    };
    if spec.stall_next > 0 && Duration::from_millis(spec.stall_ms) > MAX_STALL {
        return ApiError::bad_request(format!(
            "stall_ms may be at most {} ms",
            MAX_STALL.as_millis()
        ))
        .into_response();
    }
    {
        let mut faults = lock(&agent.faults);
        if spec.fail_next == 0 && spec.stall_next == 0 {
            faults.remove(&spec.operation);
        } else {
            tracing::info!(?spec, "fault armed");
            faults.insert(spec.operation, spec);
        }
    }
    Json(agent.fault_table()).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OperationQuery {
    pub(super) operation: Option<String>,
}

pub(super) fn parse_op(q: &Option<String>) -> Result<Option<Operation>, ApiError> {
    q.as_deref()
        .map(str::parse)
        .transpose()
        .map_err(ApiError::bad_request)
}

pub(super) async fn clear_faults(
    State(agent): State<Shared>,
    query: Result<Query<OperationQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return ApiError::bad_request(e.body_text()).into_response(),
    };
    match parse_op(&q.operation) {
        Err(e) => return e.into_response(),
        Ok(Some(op)) => {
            lock(&agent.faults).remove(&op);
        }
        Ok(None) => lock(&agent.faults).clear(),
    }
    Json(agent.fault_table()).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RecordsQuery {
    pub(super) key: Option<String>,
    pub(super) operation: Option<String>,
}

pub(super) async fn records(
    State(agent): State<Shared>,
    query: Result<Query<RecordsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return ApiError::bad_request(e.body_text()).into_response(),
    };
    let op = match parse_op(&q.operation) {
        Ok(op) => op,
        Err(e) => return e.into_response(),
    };
    let records = lock(&agent.state)
        .calls
        .iter()
        .filter(|c| q.key.as_deref().is_none_or(|k| c.key == k))
        .filter(|c| op.is_none_or(|op| c.operation == op))
        .cloned()
        .collect();
    Json(Records { records }).into_response()
}

pub(super) async fn fences(State(agent): State<Shared>) -> Json<Fences> {
    Json(Fences {
        fences: lock(&agent.state).fences.records(),
    })
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
}

pub(super) async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

pub(super) fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("an agent handler panicked");
    ApiError::internal("internal error").into_response()
}
