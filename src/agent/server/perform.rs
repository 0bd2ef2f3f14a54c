//! Mutating calls: each (key, operation) performed once, one at a time,
//! recorded, and replayed to repeats.

use super::agent::Agent;
use super::request::{error_body, error_reply, to_json, ApiError, Reply, Request};
use super::{lock, Result, MAX_RECORDS};
use crate::agent::process::Proc;
use crate::agent::protocol::{CallRecord, ProcessList, AGENT_PROCESSES, OBSERVER, POS_PROXY};
use axum::http::StatusCode;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
impl Agent {
    // -- mutating calls ----------------------------------------------------

    /// Performs `req` under `key` once: a repeat returns the recorded answer.
    pub(super) async fn perform(self: Arc<Self>, key: String, req: Request) -> Reply {
        let op = req.operation();
        let request = req.canonical();
        let _ops = self.ops.lock().await;
        if self.shutdown.is_cancelled() {
            return error_reply(ApiError::shutting_down());
        }
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
        if let Err(e) = self.apply_fault(op).await {
            if e.status != StatusCode::SERVICE_UNAVAILABLE {
                *lock(&self.failed_seen).entry((key, op)).or_default() += 1;
            }
            return error_reply(e);
        }
        tracing::info!(key, operation = %op, "performing");
        let outcome = self.execute(&req).await;
        let finished_at = Utc::now();
        let (status, body) = match outcome {
            Ok(v) => (StatusCode::OK, v),
            Err(e) => {
                tracing::warn!(key, operation = %op, error = %e.message, "operation failed");
                (e.status, error_body(&e.message))
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
