//! What the OCP actions read of their run and reach through it: ids and
//! statuses from the context, the server target and the host from the
//! inventory, the host agent's client and the run's wait deadline, each
//! failure as a run failure that names what failed.

use super::{scope, ActionError, ActionResult, Run};
use crate::agent::client::{AgentClient, Error as AgentError};
use crate::model::ocp::OcpContext;
use crate::store::inventory::{self, AgentStatus as HostAgentStatus, HostRow, ServerTarget};
use std::str::FromStr;
use std::time::Duration;

pub(super) fn db_err(e: impl std::fmt::Display) -> ActionError {
    ActionError::failed(format!("inventory update failed: {e}"))
}

pub(super) fn parse_id(run: &Run, key: &str) -> Result<i64, ActionError> {
    run.require(key)?
        .parse()
        .map_err(|_| ActionError::failed(format!("context key {key:?} is not an id")))
}

pub(super) fn parse_status<T: FromStr<Err = String>>(
    run: &Run,
    key: &str,
) -> Result<T, ActionError> {
    run.require(key)?.parse().map_err(ActionError::failed)
}

pub(super) fn force(run: &Run) -> bool {
    OcpContext::force(&run.context)
}

pub(super) async fn target(run: &Run) -> Result<ServerTarget, ActionError> {
    let id = scope::server_id(run)?;
    run.inventory(|| inventory::get_server_target(&run.deps.pool, id))
        .await
        .map_err(db_err)?
        .ok_or_else(|| ActionError::failed(format!("server {id} is not in the inventory")))
}

pub(super) async fn host(run: &Run) -> Result<HostRow, ActionError> {
    let id = scope::host_id(run)?;
    run.inventory(|| inventory::get_host(&run.deps.pool, id))
        .await
        .map_err(db_err)?
        .ok_or_else(|| ActionError::failed(format!("host {id} is not in the inventory")))
}

pub(super) fn client(run: &Run, host: &HostRow) -> Result<AgentClient, ActionError> {
    AgentClient::new(run.deps.http.clone(), &host.agent_url)
        .map(|c| c.with_deadline(run.deadline, run.deps.agent_call_cap))
        .map_err(|e| agent_err(host, e))
}

/// An agent failure as a run failure naming the host.
pub(super) fn agent_err(host: &HostRow, e: AgentError) -> ActionError {
    match e {
        AgentError::Cancelled { .. } => ActionError::Cancelled,
        e => ActionError::failed(format!("agent of host {} ({}): {e}", host.name, host.ip)),
    }
}

pub(super) fn deadline(run: &Run) -> tokio::time::Instant {
    // The engine stops the run at its timeout; the wait gives up just before
    // so that its message says what it last saw.
    let margin = Duration::from_millis(500).min(run.timeout / 4);
    run.deadline.checked_sub(margin).unwrap_or(run.deadline)
}

pub(super) async fn set_host(run: &Run, id: i64, s: HostAgentStatus) -> ActionResult {
    run.inventory(|| inventory::set_host_agent_status(&run.deps.pool, id, s, None))
        .await
        .map_err(db_err)?;
    run.log(format!("host {id} agent status -> {s}")).await;
    Ok(())
}
