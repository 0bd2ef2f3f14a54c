//! Mutating calls: each (key, operation) performed once, one at a time,
//! recorded, and replayed to repeats.

use super::agent::Agent;
use super::fence::{attempt_of, Verdict};
use super::request::{error_body, error_reply, to_json, ApiError, Reply, Request};
use super::state::{AgentState, Current};
use super::{lock, Result, MAX_RECORDS};
use crate::agent::process::Proc;
use crate::agent::protocol::Operation;
use crate::agent::protocol::{CallRecord, ProcessList, AGENT_PROCESSES, OBSERVER, POS_PROXY};
use axum::http::StatusCode;
use chrono::Utc;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Clears the attempt in progress when its performance ends, however.
struct Performing<'a>(&'a Mutex<AgentState>);

impl Drop for Performing<'_> {
    fn drop(&mut self) {
        lock(self.0).current = None;
    }
}

/// How a performance ended before it is recorded.
enum Ended {
    /// An injected fault: nothing was attempted, nothing is recorded.
    Fault(ApiError),
    Done(Result<serde_json::Value, ApiError>),
}

impl Agent {
    // -- mutating calls ----------------------------------------------------

    /// Checks a call's key against its subtask's fence as it arrives, before
    /// it queues for its turn: an older attempt is refused; a newer one
    /// raises the fence, stops the older attempt's performance in progress
    /// and is saved before anything of it is performed.
    pub(super) async fn admit(&self, key: &str, op: Operation) -> Result<(), ApiError> {
        let verdict = {
            let mut st = lock(&self.state);
            let v = st.fences.admit(key);
            if let (Verdict::Raised { .. }, Some((subtask, run_time))) = (v, attempt_of(key)) {
                if let Some(c) = st
                    .current
                    .as_ref()
                    .filter(|c| c.subtask == subtask && c.run_time < run_time)
                {
                    tracing::warn!(
                        subtask,
                        stopped = c.run_time,
                        by = run_time,
                        "stopping the operation of a superseded attempt"
                    );
                    c.stop.cancel();
                }
            }
            v
        };
        match verdict {
            Verdict::Superseded { by } => {
                tracing::warn!(key, operation = %op, by, "refused a call of a superseded attempt");
                Err(ApiError::superseded(key, by))
            }
            Verdict::Raised { .. } => self.persist().await.map_err(|e| {
                tracing::error!(key, error = %e, "could not save a fence");
                ApiError::internal(format!("could not save the fence of {key}: {e}"))
            }),
            Verdict::Current | Verdict::Unfenced => Ok(()),
        }
    }

    /// Performs `req` under `key` once: a repeat returns the recorded answer.
    pub(super) async fn perform(self: Arc<Self>, key: String, req: Request) -> Reply {
        let op = req.operation();
        let request = req.canonical();
        let _ops = self.ops.lock().await;
        if self.shutdown.is_cancelled() {
            return error_reply(ApiError::shutting_down());
        }
        // A newer attempt may have arrived while this call waited its turn.
        // Checked and marked current under one lock, so a newer attempt
        // arriving later finds this performance to stop.
        let stop = CancellationToken::new();
        {
            let mut st = lock(&self.state);
            if let Some(by) = st.fences.refuses(&key) {
                drop(st);
                tracing::warn!(key, operation = %op, by, "refused a call of a superseded attempt");
                return error_reply(ApiError::superseded(&key, by));
            }
            st.current = attempt_of(&key).map(|(subtask, run_time)| Current {
                subtask: subtask.to_string(),
                run_time,
                stop: stop.clone(),
            });
        }
        let _performing = Performing(&self.state);
        let replay = {
            let mut st = lock(&self.state);
            st.find_call(&key, op).map(|rec| {
                if rec.request != request {
                    Err(ApiError::conflict(format!(
                        "idempotency key {key:?} was used for a different {op} request: {}",
                        rec.request
                    )))
                } else {
                    rec.seen += 1;
                    Ok(Reply {
                        status: StatusCode::from_u16(rec.status)
                            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                        body: rec.response.clone(),
                        replayed: true,
                    })
                }
            })
        };
        match replay {
            Some(Err(e)) => return error_reply(e),
            Some(Ok(reply)) => {
                tracing::info!(key, operation = %op, "replayed a recorded call");
                if let Err(e) = self.persist().await {
                    tracing::error!(error = %e, "could not save the replay count");
                }
                return reply;
            }
            None => {}
        }
        let started_at = Utc::now();
        let performance = async {
            if let Err(e) = self.apply_fault(op).await {
                return Ended::Fault(e);
            }
            tracing::info!(key, operation = %op, "performing");
            Ended::Done(self.execute(&req).await)
        };
        let ended = tokio::select! {
            ended = performance => ended,
            _ = stop.cancelled() => {
                let by = attempt_of(&key)
                    .and_then(|(subtask, _)| lock(&self.state).fences.newest(subtask))
                    .unwrap_or_default();
                tracing::warn!(key, operation = %op, by, "stopped: a newer attempt reached the agent");
                Ended::Done(Err(ApiError::superseded(&key, by)))
            }
        };
        let outcome = match ended {
            Ended::Fault(e) => {
                if e.status != StatusCode::SERVICE_UNAVAILABLE {
                    *lock(&self.failed_seen).entry((key, op)).or_default() += 1;
                }
                return error_reply(e);
            }
            Ended::Done(outcome) => outcome,
        };
        let finished_at = Utc::now();
        let (status, body) = match outcome {
            Ok(v) => (StatusCode::OK, v),
            Err(e) => {
                tracing::warn!(key, operation = %op, error = %e.message, "operation failed");
                (e.status, error_body(&e))
            }
        };
        let earlier = lock(&self.failed_seen)
            .remove(&(key.clone(), op))
            .unwrap_or(0);
        {
            let mut st = lock(&self.state);
            st.calls.push_back(CallRecord {
                key,
                operation: op,
                request,
                status: status.as_u16(),
                response: body.clone(),
                seen: earlier + 1,
                started_at,
                finished_at,
            });
            while st.calls.len() > MAX_RECORDS {
                st.calls.pop_front();
            }
        }
        if let Err(e) = self.persist().await {
            tracing::error!(error = %e, "performed a call but could not save the state");
            return error_reply(ApiError::internal(format!(
                "the operation was performed, but {e}"
            )));
        }
        Reply {
            status,
            body,
            replayed: false,
        }
    }

    pub(super) async fn execute(&self, req: &Request) -> Result<serde_json::Value, ApiError> {
        match req {
            Request::ObserverStart(r) => {
                let port = r.port.unwrap_or(self.cfg.observer_port);
                self.start_observer(port).await?;
                to_json(&self.observer_status().await)
            }
            Request::ObserverStop(r) => {
                let grace = r
                    .timeout_ms
                    .map_or(self.cfg.stop_timeout, Duration::from_millis);
                self.stop_slot(OBSERVER, r.force, grace).await?;
                to_json(&self.observer_status().await)
            }
            Request::ObserverActivate => {
                let status = self.observer_status().await;
                if !status.is_running() {
                    return Err(ApiError::conflict("the observer is not running"));
                }
                if !status.listening {
                    return Err(ApiError::conflict(format!(
                        "the observer (pid {}) does not answer on {}:{} yet",
                        status.pid.unwrap_or_default(),
                        status.ip,
                        status.port
                    )));
                }
                lock(&self.state).observer_active = true;
                to_json(&self.observer_status().await)
            }
            Request::ObserverDeactivate => {
                lock(&self.state).observer_active = false;
                to_json(&self.observer_status().await)
            }
            Request::PosProxyRestart => {
                self.stop_slot(POS_PROXY, false, self.cfg.stop_timeout)
                    .await?;
                to_json(&self.start_standin(POS_PROXY)?)
            }
            Request::AgentStopAll => {
                for name in AGENT_PROCESSES {
                    self.stop_slot(name, false, self.cfg.stop_timeout).await?;
                }
                to_json(&ProcessList {
                    processes: self.own_processes(),
                })
            }
            Request::AgentStartAll => {
                for name in AGENT_PROCESSES {
                    let running = lock(&self.state).slot(name).running().is_some();
                    if !running {
                        self.start_standin(name)?;
                    }
                }
                to_json(&ProcessList {
                    processes: self.own_processes(),
                })
            }
        }
    }

    pub(super) async fn start_observer(&self, port: u16) -> Result<(), ApiError> {
        let (running, current_port) = {
            let mut st = lock(&self.state);
            let current = st.observer_port;
            (st.slot(OBSERVER).running().map(|p| p.pid), current)
        };
        if let Some(pid) = running {
            if current_port == port {
                return Ok(());
            }
            return Err(ApiError::conflict(format!(
                "the observer already runs (pid {pid}) on port {current_port}, not {port}"
            )));
        }
        let p = Proc::spawn(&self.observer_spec(port))?;
        let mut st = lock(&self.state);
        st.observer_port = port;
        st.observer_active = false;
        let slot = st.slot(OBSERVER);
        slot.proc = Some(p);
        slot.started_at = Some(Utc::now());
        slot.last_exit = None;
        Ok(())
    }
}
