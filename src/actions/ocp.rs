//! The actions of the four OCP templates. Each does real work: through the
//! host's agent over HTTP (with the run's idempotency key) and in the
//! inventory in PostgreSQL; each has a rollback, and the waiting steps stop
//! when their run is cancelled. The agent restart's steps are in
//! `agent_steps`.

use super::status::{
    former_key, restore_statuses, set_cluster, set_server, set_zone, SyncClusterInfo, UpdateStatus,
};
use super::{Action, ActionError, ActionResult, Registry, Run};
use crate::agent::protocol::{StartObserver, StopObserver};
use crate::dag::templates::OCP;
pub use crate::model::ocp::Level;
use crate::model::ocp::{key, status_key, Phase};
use crate::store::inventory::{
    AgentStatus as HostAgentStatus, ClusterStatus, ServerStatus, ServerTarget, ZoneStatus,
};
use async_trait::async_trait;

mod agent_steps;

pub use agent_steps::{FinishAgent, PrepareAgent, RestartPosProxy, StartAll, StopAll};

/// Registers every template className.
pub fn register(r: &mut Registry) {
    let c = |suffix: &str| format!("{OCP}.{suffix}");
    r.register(
        &c("server.PrepareRestartObServerTask"),
        Prepare(
            ServerStatus::Restarting,
            ServerStatus::Running,
            ServerStatus::Running,
        ),
    );
    r.register(
        &c("server.PrepareStartObServerTask"),
        Prepare(
            ServerStatus::Starting,
            ServerStatus::Running,
            ServerStatus::Stopped,
        ),
    );
    r.register(
        &c("server.PrepareStopObServerTask"),
        Prepare(
            ServerStatus::Stopping,
            ServerStatus::Stopped,
            ServerStatus::Running,
        ),
    );
    r.register(&c("server.StopObServerTask"), StopServer);
    r.register(&c("server.StartObServerTask"), StartServer);
    r.register(&c("server.StopObServerProcessTask"), StopProcess);
    r.register(&c("server.StartObServerProcessTask"), StartProcess);
    r.register(&c("server.WaitObServerActiveTask"), WaitActive);
    r.register(&c("server.WaitObServerStopTask"), WaitStop);
    r.register(&c("obagent.StartOcpAgentServiceTask"), StartAgentService);
    r.register(
        &c("server.UpdateObServerStatusTask"),
        UpdateStatus(Level::Server),
    );
    r.register(&c("zone.UpdateObZoneStatusTask"), UpdateStatus(Level::Zone));
    r.register(&c("cluster.SyncClusterInfoTask"), SyncClusterInfo);
    r.register(
        &c("cluster.UpdateObClusterStatusTask"),
        UpdateStatus(Level::Cluster),
    );
    r.register(
        &c("cluster.PrepareRestartObClusterTask"),
        super::status::PrepareCluster,
    );
    r.register(&c("obagent.PrepareRestartOcpAgentTask"), PrepareAgent);
    r.register(&c("obagent.RestartPosProxyTask"), RestartPosProxy);
    r.register(&c("obagent.StopAllOcpAgentProcessesTask"), StopAll);
    r.register(&c("obagent.StartAllOcpAgentProcessesTask"), StartAll);
    r.register(&c("obagent.FinishOcpAgentOperationTask"), FinishAgent);
}

use super::target::{agent_err, client, deadline, force, host, parse_status, set_host, target};

// ------------------------------------------------------ server steps

/// Prepare: records the server's former status and the one to reach, then
/// marks the server (in-progress status), its zone and cluster OPERATING.
/// Fields: in-progress status, target status, the status the operation
/// starts from (recorded as former when an earlier attempt already marked
/// the server in progress).
pub struct Prepare(ServerStatus, ServerStatus, ServerStatus);

#[async_trait]
impl Action for Prepare {
    async fn execute(&self, run: &mut Run) -> ActionResult {
        let t = target(run).await?;
        let former = if t.server.status == self.0 {
            self.2
        } else {
            t.server.status
        };
        let key = former_key(run, Level::Server, t.server.id)?;
        run.context.set(key, former.as_str());
        run.context
            .set(status_key(Phase::Target, Level::Server), self.1.as_str());
        run.log(format!(
            "server {} on host {} ({}:{}), zone {}, cluster {}",
            t.server.id, t.host.name, t.server.ip, t.server.sql_port, t.zone.name, t.cluster.name
        ))
        .await;
        set_server(run, t.server.id, self.0).await?;
        set_zone(run, t.zone.id, ZoneStatus::Operating).await?;
        set_cluster(run, t.cluster.id, ClusterStatus::Operating).await
    }

    async fn rollback(&self, run: &mut Run) -> ActionResult {
        let t = target(run).await?;
        restore_statuses(run, &t).await
    }
}

/// `ALTER SYSTEM STOP SERVER`: the agent deactivates the observer.
pub struct StopServer;

#[async_trait]
impl Action for StopServer {
    fn fenced_by_agent(&self) -> bool {
        true
    }

    async fn execute(&self, run: &mut Run) -> ActionResult {
        let t = target(run).await?;
        let agent = client(run, &t.host)?;
        let status = agent
            .observer_status()
            .await
            .map_err(|e| agent_err(&t.host, e))?;
        if !status.is_running() {
            run.log("observer process is not running; the server is already stopped")
                .await;
            return Ok(());
        }
        let s = agent
            .deactivate_observer(&run.idempotency_key())
            .await
            .map_err(|e| agent_err(&t.host, e))?;
        run.log(format!("server deactivated (active={})", s.active))
            .await;
        Ok(())
    }

    async fn rollback(&self, run: &mut Run) -> ActionResult {
        let t = target(run).await?;
        let agent = client(run, &t.host)?;
        let status = agent
            .observer_status()
            .await
            .map_err(|e| agent_err(&t.host, e))?;
        if status.is_running() && !status.active {
            agent
                .activate_observer(&run.idempotency_key())
                .await
                .map_err(|e| agent_err(&t.host, e))?;
            run.log("server activated again").await;
        }
        Ok(())
    }
}

/// `ALTER SYSTEM START SERVER`: the agent activates the observer.
pub struct StartServer;

#[async_trait]
impl Action for StartServer {
    fn fenced_by_agent(&self) -> bool {
        true
    }

    async fn execute(&self, run: &mut Run) -> ActionResult {
        let t = target(run).await?;
        let agent = client(run, &t.host)?;
        let s = agent
            .activate_observer(&run.idempotency_key())
            .await
            .map_err(|e| agent_err(&t.host, e))?;
        if !s.active {
            return Err(ActionError::failed(format!(
                "agent of host {} did not activate the server",
                t.host.name
            )));
        }
        run.log("server activated").await;
        Ok(())
    }

    async fn rollback(&self, run: &mut Run) -> ActionResult {
        let t = target(run).await?;
        let agent = client(run, &t.host)?;
        if agent
            .observer_status()
            .await
            .map_err(|e| agent_err(&t.host, e))?
            .is_running()
        {
            agent
                .deactivate_observer(&run.idempotency_key())
                .await
                .map_err(|e| agent_err(&t.host, e))?;
            run.log("server deactivated again").await;
        }
        Ok(())
    }
}

async fn stop_observer(run: &Run, t: &ServerTarget) -> ActionResult {
    let agent = client(run, &t.host)?;
    let force = force(run);
    let s = agent
        .stop_observer(
            &run.idempotency_key(),
            &StopObserver {
                force,
                timeout_ms: None,
            },
        )
        .await
        .map_err(|e| agent_err(&t.host, e))?;
    run.log(format!(
        "observer process stopped{} (last exit: {})",
        if force { " by force" } else { "" },
        s.last_exit.as_deref().unwrap_or("-")
    ))
    .await;
    Ok(())
}

async fn start_observer(run: &Run, t: &ServerTarget) -> ActionResult {
    let agent = client(run, &t.host)?;
    let port = u16::try_from(t.server.sql_port)
        .map_err(|_| ActionError::failed(format!("bad SQL port {}", t.server.sql_port)))?;
    let s = agent
        .start_observer(&run.idempotency_key(), &StartObserver { port: Some(port) })
        .await
        .map_err(|e| agent_err(&t.host, e))?;
    run.log(format!(
        "observer process started, pid {}",
        s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
    ))
    .await;
    Ok(())
}

/// Stops the observer process (gracefully, or killed when `force`).
pub struct StopProcess;

#[async_trait]
impl Action for StopProcess {
    fn fenced_by_agent(&self) -> bool {
        true
    }

    async fn execute(&self, run: &mut Run) -> ActionResult {
        let t = target(run).await?;
        stop_observer(run, &t).await
    }

    async fn rollback(&self, run: &mut Run) -> ActionResult {
        let t = target(run).await?;
        start_observer(run, &t).await
    }
}

/// Starts the observer process.
pub struct StartProcess;

#[async_trait]
impl Action for StartProcess {
    fn fenced_by_agent(&self) -> bool {
        true
    }

    async fn execute(&self, run: &mut Run) -> ActionResult {
        let t = target(run).await?;
        start_observer(run, &t).await
    }

    async fn rollback(&self, run: &mut Run) -> ActionResult {
        let t = target(run).await?;
        stop_observer(run, &t).await
    }
}

/// Polls the agent until the observer answers on its SQL port.
pub struct WaitActive;

#[async_trait]
impl Action for WaitActive {
    fn fenced_by_agent(&self) -> bool {
        true
    }

    async fn execute(&self, run: &mut Run) -> ActionResult {
        let t = target(run).await?;
        let agent = client(run, &t.host)?;
        let s = agent
            .wait_observer(
                "observer active",
                |s| s.is_running() && s.listening,
                deadline(run),
                &run.cancel,
            )
            .await
            .map_err(|e| agent_err(&t.host, e))?;
        run.log(format!("observer answers on {}:{}", s.ip, s.port))
            .await;
        Ok(())
    }
}

/// Polls the agent until the observer process is gone.
pub struct WaitStop;

#[async_trait]
impl Action for WaitStop {
    fn fenced_by_agent(&self) -> bool {
        true
    }

    async fn execute(&self, run: &mut Run) -> ActionResult {
        let t = target(run).await?;
        let agent = client(run, &t.host)?;
        agent
            .wait_observer(
                "observer stopped",
                |s| !s.is_running() && !s.listening,
                deadline(run),
                &run.cancel,
            )
            .await
            .map_err(|e| agent_err(&t.host, e))?;
        run.log("observer process is gone").await;
        Ok(())
    }
}

/// Makes sure the agent's own processes run after the observer came back.
pub struct StartAgentService;

#[async_trait]
impl Action for StartAgentService {
    fn fenced_by_agent(&self) -> bool {
        true
    }

    async fn execute(&self, run: &mut Run) -> ActionResult {
        let t = target(run).await?;
        let agent = client(run, &t.host)?;
        let procs = agent
            .start_all(&run.idempotency_key())
            .await
            .map_err(|e| agent_err(&t.host, e))?;
        let names: Vec<String> = procs
            .iter()
            .map(|p| {
                format!(
                    "{}={}",
                    p.name,
                    p.pid.map(|p| p.to_string()).unwrap_or_default()
                )
            })
            .collect();
        run.log(format!(
            "agent service processes running: {}",
            names.join(", ")
        ))
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::templates::Template;

    #[test]
    fn every_template_class_has_an_action() {
        let mut r = Registry::new();
        register(&mut r);
        for t in [
            Template::RestartObserver,
            Template::StartObserver,
            Template::StopObserver,
            Template::RestartAgent,
        ] {
            for n in t.nodes() {
                assert!(r.contains(&n.class_name), "{}", n.class_name);
            }
        }
    }
}
