//! Restart of a host's OCP agent: refused while the agent is RESTARTING.

use super::{Error, Operation, Prepared, Result};
use crate::dag::templates::Template;
use crate::model::ocp::OcpContext;
use crate::store::inventory::{self, AgentStatus};
use async_trait::async_trait;
use sqlx::PgPool;

/// Restart the agent of host `host`.
#[derive(Debug, Clone, Copy)]
pub struct RestartAgent {
    pub host: i64,
}

#[async_trait]
impl Operation for RestartAgent {
    fn template(&self) -> Template {
        Template::RestartAgent
    }

    fn target_key(&self) -> String {
        format!("host:{}", self.host)
    }

    async fn prepare(&self, pool: &PgPool) -> Result<Prepared> {
        let host = inventory::get_host(pool, self.host)
            .await?
            .ok_or(Error::HostNotFound(self.host))?;
        if host.agent_status == AgentStatus::Restarting {
            return Err(Error::AgentRestarting(self.host));
        }
        Ok(Prepared {
            cluster_id: None,
            host_id: Some(host.id),
            server_id: None,
            context: OcpContext::Agent { host_id: host.id }.to_context(),
            nodes: Template::RestartAgent.nodes(),
            holds: Vec::new(),
            max_concurrency: super::MAX_CONCURRENCY,
        })
    }
}
