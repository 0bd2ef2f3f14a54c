//! The steps of the agent restart template: prepare, restart the agent's
//! proxy, stop and start everything on the host, and finish (each with its
//! rollback).

use super::super::{Action, ActionError, ActionResult, Run};
use super::*;
use async_trait::async_trait;

/// Records the agent's former status and marks it RESTARTING.
pub struct PrepareAgent;

#[async_trait]
impl Action for PrepareAgent {
    async fn execute(&self, run: &mut Run) -> ActionResult {
        let h = host(run).await?;
        if run.context.get(key::FORMER_AGENT_STATUS).is_none() {
            run.context
                .set(key::FORMER_AGENT_STATUS, h.agent_status.as_str());
        }
        run.log(format!(
            "restarting the agent of host {} at {}",
            h.name, h.agent_url
        ))
        .await;
        set_host(run, h.id, HostAgentStatus::Restarting).await
    }

    async fn rollback(&self, run: &mut Run) -> ActionResult {
        let h = host(run).await?;
        if let Ok(s) = parse_status::<HostAgentStatus>(run, key::FORMER_AGENT_STATUS) {
            set_host(run, h.id, s).await?;
        }
        Ok(())
    }
}

/// Restarts the pos proxy process.
pub struct RestartPosProxy;

#[async_trait]
impl Action for RestartPosProxy {
    fn fenced_by_agent(&self) -> bool {
        true
    }

    async fn execute(&self, run: &mut Run) -> ActionResult {
        let h = host(run).await?;
        let p = client(run, &h)?
            .restart_pos_proxy(&run.idempotency_key())
            .await
            .map_err(|e| agent_err(&h, e))?;
        run.log(format!(
            "pos proxy restarted, pid {}",
            p.pid.map(|p| p.to_string()).unwrap_or_default()
        ))
        .await;
        Ok(())
    }
}

/// Stops all the agent's own processes.
pub struct StopAll;

#[async_trait]
impl Action for StopAll {
    fn fenced_by_agent(&self) -> bool {
        true
    }

    async fn execute(&self, run: &mut Run) -> ActionResult {
        let h = host(run).await?;
        client(run, &h)?
            .stop_all(&run.idempotency_key())
            .await
            .map_err(|e| agent_err(&h, e))?;
        run.log("all agent processes stopped").await;
        Ok(())
    }

    async fn rollback(&self, run: &mut Run) -> ActionResult {
        let h = host(run).await?;
        client(run, &h)?
            .start_all(&run.idempotency_key())
            .await
            .map_err(|e| agent_err(&h, e))?;
        run.log("agent processes started again").await;
        Ok(())
    }
}

/// Starts all the agent's own processes.
pub struct StartAll;

#[async_trait]
impl Action for StartAll {
    fn fenced_by_agent(&self) -> bool {
        true
    }

    async fn execute(&self, run: &mut Run) -> ActionResult {
        let h = host(run).await?;
        let procs = client(run, &h)?
            .start_all(&run.idempotency_key())
            .await
            .map_err(|e| agent_err(&h, e))?;
        let pids: Vec<String> = procs
            .iter()
            .map(|p| {
                format!(
                    "{}={}",
                    p.name,
                    p.pid.map(|p| p.to_string()).unwrap_or_default()
                )
            })
            .collect();
        run.log(format!("agent processes started: {}", pids.join(", ")))
            .await;
        Ok(())
    }
}

/// Checks that every agent process runs, then marks the agent ONLINE.
pub struct FinishAgent;

#[async_trait]
impl Action for FinishAgent {
    fn fenced_by_agent(&self) -> bool {
        true
    }

    async fn execute(&self, run: &mut Run) -> ActionResult {
        let h = host(run).await?;
        let status = client(run, &h)?
            .status()
            .await
            .map_err(|e| agent_err(&h, e))?;
        if let Some(p) = status.processes.iter().find(|p| !p.is_running()) {
            return Err(ActionError::failed(format!(
                "agent process {} on host {} is not running",
                p.name, h.name
            )));
        }
        set_host(run, h.id, HostAgentStatus::Online).await
    }

    async fn rollback(&self, run: &mut Run) -> ActionResult {
        let h = host(run).await?;
        if let Ok(s) = parse_status::<HostAgentStatus>(run, key::FORMER_AGENT_STATUS) {
            set_host(run, h.id, s).await?;
        }
        Ok(())
    }
}
