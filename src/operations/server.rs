//! Restart, start and stop of an OBServer: the server-state guards and the
//! context OCP gives them.

use super::{Error, Operation, Prepared, Result};
use crate::dag::templates::Template;
use crate::model::ocp::{OcpContext, ServerTargetKeys};
use crate::store::inventory::{self, ServerStatus, ServerTarget};
use async_trait::async_trait;
use sqlx::PgPool;

/// One of the three server operations on server `server` of cluster
/// `cluster`.
#[derive(Debug, Clone, Copy)]
pub struct ServerOperation {
    pub template: Template,
    pub force: bool,
    pub cluster: i64,
    pub server: i64,
}

impl ServerOperation {
    /// The server states this operation accepts (the console asks too).
    pub fn accepts(&self, status: ServerStatus) -> bool {
        use ServerStatus::*;
        match self.template {
            Template::StartObserver => status == Stopped,
            Template::StopObserver => status == Running || (self.force && status == Abnormal),
            Template::RestartObserver => {
                matches!(status, Running | Stopped) || (self.force && status == Abnormal)
            }
            Template::RestartAgent => false,
        }
    }

    pub(super) fn wanted(&self) -> &'static str {
        match (self.template, self.force) {
            (Template::StartObserver, _) => "start needs a STOPPED server",
            (Template::StopObserver, false) => "stop needs a RUNNING server",
            (Template::StopObserver, true) => "a forced stop needs a RUNNING or ABNORMAL server",
            (Template::RestartObserver, false) => "restart needs a RUNNING or STOPPED server",
            (Template::RestartObserver, true) => {
                "a forced restart needs a RUNNING, STOPPED or ABNORMAL server"
            }
            (Template::RestartAgent, _) => "not a server operation",
        }
    }

    /// The server with its zone, cluster and host; says what is missing.
    async fn target(&self, pool: &PgPool) -> Result<ServerTarget> {
        let (cluster, server) = (self.cluster, self.server);
        match inventory::get_server_target(pool, server).await? {
            Some(t) if t.cluster.id == cluster => Ok(t),
            found => {
                if inventory::get_cluster(pool, cluster).await?.is_none() {
                    return Err(Error::ClusterNotFound(cluster));
                }
                Err(match found {
                    Some(_) => Error::ServerNotInCluster { server, cluster },
                    None => Error::ServerNotFound(server),
                })
            }
        }
    }
}

#[async_trait]
impl Operation for ServerOperation {
    fn template(&self) -> Template {
        self.template
    }

    fn target_key(&self) -> String {
        format!("server:{}", self.server)
    }

    fn cluster(&self) -> Option<i64> {
        Some(self.cluster)
    }

    async fn prepare(&self, pool: &PgPool) -> Result<Prepared> {
        let t = self.target(pool).await?;
        let status = t.server.status;
        if !self.accepts(status) {
            return Err(Error::ServerState {
                server: t.server.id,
                status,
                wanted: self.wanted(),
            });
        }
        let target = ServerTargetKeys {
            cluster_id: t.cluster.id,
            cluster_name: t.cluster.name.clone(),
            cluster_status: t.cluster.status.as_str().to_string(),
            zone_name: t.zone.name.clone(),
            zone_status: t.zone.status.as_str().to_string(),
            server_id: t.server.id,
        };
        Ok(Prepared {
            cluster_id: Some(t.cluster.id),
            host_id: None,
            server_id: Some(t.server.id),
            context: OcpContext::Server {
                target,
                force: self.force,
            }
            .to_context(),
            nodes: self.template.nodes(),
            holds: Vec::new(),
            max_concurrency: super::MAX_CONCURRENCY,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServerStatus::*;

    #[test]
    fn guards_follow_the_documented_states() {
        let op = |template, force| ServerOperation {
            template,
            force,
            cluster: 1,
            server: 1,
        };
        let start = op(Template::StartObserver, false);
        assert!(start.accepts(Stopped));
        for s in [Running, Starting, Stopping, Restarting, Abnormal] {
            assert!(!start.accepts(s), "{s}");
        }
        let stop = op(Template::StopObserver, false);
        assert!(stop.accepts(Running));
        assert!(!stop.accepts(Stopped));
        assert!(!stop.accepts(Abnormal));
        assert!(op(Template::StopObserver, true).accepts(Abnormal));
        let restart = op(Template::RestartObserver, false);
        assert!(restart.accepts(Running) && restart.accepts(Stopped));
        for s in [Starting, Stopping, Restarting, Abnormal] {
            assert!(!restart.accepts(s), "{s}");
        }
        assert!(op(Template::RestartObserver, true).accepts(Abnormal));
    }
}
