//! The status steps shared by every server template and its multi-server
//! forms: preparing a cluster, writing a server's, zone's or cluster's
//! status (and restoring the former one on rollback), and checking the
//! agents against the inventory. In a multi-server task the former status
//! of each server and zone is kept under its own key, so the branches of a
//! zone merge without conflict at its fan-in.

use super::target::{agent_err, client, db_err, parse_id, target};
use super::{scope, Action, ActionError, ActionResult, Run};
use crate::dag::rollout::{former_server_key, former_zone_key, SERVER_IDS};
use crate::model::ocp::{key, status_key, Level, Phase};
use crate::store::inventory::{self, ClusterStatus, ServerStatus, ServerTarget, ZoneStatus};
use async_trait::async_trait;

pub(super) async fn set_server(run: &Run, id: i64, s: ServerStatus) -> ActionResult {
    run.inventory(|| inventory::set_server_status(&run.deps.pool, id, s, None))
        .await
        .map_err(db_err)?;
    run.log(format!("server {id} status -> {s}")).await;
    Ok(())
}

pub(super) async fn set_zone(run: &Run, id: i64, s: ZoneStatus) -> ActionResult {
    run.inventory(|| inventory::set_zone_status(&run.deps.pool, id, s, None))
        .await
        .map_err(db_err)?;
    run.log(format!("zone {id} status -> {s}")).await;
    Ok(())
}

pub(super) async fn set_cluster(run: &Run, id: i64, s: ClusterStatus) -> ActionResult {
    run.inventory(|| inventory::set_cluster_status(&run.deps.pool, id, s, None))
        .await
        .map_err(db_err)?;
    run.log(format!("cluster {id} status -> {s}")).await;
    Ok(())
}

/// Restores server, zone and cluster to the statuses recorded in the context.
pub(super) async fn restore_statuses(run: &Run, t: &ServerTarget) -> ActionResult {
    Level::Server.restore(run, t.server.id).await?;
    Level::Zone.restore(run, t.zone.id).await?;
    Level::Cluster.restore(run, t.cluster.id).await
}

/// The context key of the former status of row `id` at `level`: one per
/// server and per zone in a multi-server task, the seed's key otherwise.
pub(super) fn former_key(run: &Run, level: Level, id: i64) -> Result<String, ActionError> {
    Ok(match (level, scope::zone_param(run)?) {
        (Level::Server, Some(_)) => former_server_key(id),
        (Level::Zone, Some(_)) => former_zone_key(id),
        _ => status_key(Phase::Former, level),
    })
}

/// Where a status step writes, at each level.
trait LevelRow {
    async fn subject(self, run: &Run) -> Result<i64, ActionError>;
    async fn set(self, run: &Run, id: i64, status: &str) -> ActionResult;
    async fn restore(self, run: &Run, id: i64) -> ActionResult;
}

impl LevelRow for Level {
    /// The row this run's step writes at this level.
    async fn subject(self, run: &Run) -> Result<i64, ActionError> {
        match self {
            Level::Server => scope::server_id(run),
            Level::Zone => match scope::zone_param(run)? {
                Some(zone) => Ok(zone),
                None => Ok(target(run).await?.zone.id),
            },
            Level::Cluster => parse_id(run, key::CLUSTER_ID),
        }
    }

    /// Writes `status` (as the context holds it) into row `id`.
    async fn set(self, run: &Run, id: i64, status: &str) -> ActionResult {
        let key = status_key(Phase::Target, self);
        let bad = |e: String| ActionError::failed(format!("{key}: {e}"));
        match self {
            Level::Server => set_server(run, id, status.parse().map_err(bad)?).await,
            Level::Zone => set_zone(run, id, status.parse().map_err(bad)?).await,
            Level::Cluster => set_cluster(run, id, status.parse().map_err(bad)?).await,
        }
    }

    /// Restores the status recorded as former in the context, if any.
    async fn restore(self, run: &Run, id: i64) -> ActionResult {
        match run.context.get(&former_key(run, self, id)?) {
            Some(s) => self.set(run, id, s).await,
            None => Ok(()),
        }
    }
}

/// Writes the target status of the server, its zone or its cluster into the
/// inventory; its rollback restores the former one.
pub struct UpdateStatus(pub Level);

#[async_trait]
impl Action for UpdateStatus {
    async fn execute(&self, run: &mut Run) -> ActionResult {
        let id = self.0.subject(run).await?;
        let status = run.require(&status_key(Phase::Target, self.0))?;
        self.0.set(run, id, &status).await
    }

    async fn rollback(&self, run: &mut Run) -> ActionResult {
        let id = self.0.subject(run).await?;
        self.0.restore(run, id).await
    }
}

/// The servers a task works on: listMap `server_ids`, or its `server_id`.
fn task_servers(run: &Run) -> Result<Vec<i64>, ActionError> {
    let list = run.context.list(SERVER_IDS);
    if list.is_empty() {
        return Ok(vec![parse_id(run, key::SERVER_ID)?]);
    }
    list.iter()
        .map(|v| {
            v.parse()
                .map_err(|_| ActionError::failed(format!("listMap server_ids has {v:?}")))
        })
        .collect()
}

/// Checks, for every server of the task, what its agent reports against
/// what the inventory now says, and logs the cluster's servers.
pub struct SyncClusterInfo;

#[async_trait]
impl Action for SyncClusterInfo {
    async fn execute(&self, run: &mut Run) -> ActionResult {
        let cluster = parse_id(run, key::CLUSTER_ID)?;
        for id in task_servers(run)? {
            let t = run
                .inventory(|| inventory::get_server_target(&run.deps.pool, id))
                .await
                .map_err(db_err)?
                .filter(|t| t.cluster.id == cluster)
                .ok_or_else(|| {
                    ActionError::failed(format!("server {id} is not in cluster {cluster}"))
                })?;
            let observed = client(run, &t.host)?
                .observer_status()
                .await
                .map_err(|e| agent_err(&t.host, e))?;
            let want_running = t.server.status == ServerStatus::Running;
            if observed.is_running() != want_running {
                return Err(ActionError::failed(format!(
                    "server {} is {} in the inventory but its observer process is {} on host {}",
                    t.server.id,
                    t.server.status,
                    if observed.is_running() {
                        "running"
                    } else {
                        "stopped"
                    },
                    t.host.name
                )));
            }
        }
        let name = run
            .inventory(|| inventory::get_cluster(&run.deps.pool, cluster))
            .await
            .map_err(db_err)?
            .map(|c| c.name)
            .unwrap_or_default();
        let servers = run
            .inventory(|| inventory::servers_of_cluster(&run.deps.pool, cluster))
            .await
            .map_err(db_err)?;
        let summary: Vec<String> = servers
            .iter()
            .map(|s| format!("{}:{} {}", s.ip, s.sql_port, s.status))
            .collect();
        run.log(format!("cluster {name} synced: {}", summary.join(", ")))
            .await;
        Ok(())
    }
}

/// First step of a rolling cluster restart: checks that every server of
/// the task is still in the cluster and marks the cluster OPERATING; its
/// rollback restores the former status.
pub struct PrepareCluster;

#[async_trait]
impl Action for PrepareCluster {
    async fn execute(&self, run: &mut Run) -> ActionResult {
        let cluster = parse_id(run, key::CLUSTER_ID)?;
        let servers = task_servers(run)?;
        let present = run
            .inventory(|| inventory::servers_of_cluster(&run.deps.pool, cluster))
            .await
            .map_err(db_err)?;
        if let Some(gone) = servers
            .iter()
            .find(|s| !present.iter().any(|p| p.id == **s))
        {
            return Err(ActionError::failed(format!(
                "server {gone} is no longer in cluster {cluster}"
            )));
        }
        run.log(format!(
            "restarting {} servers of cluster {cluster}, zone by zone",
            servers.len()
        ))
        .await;
        set_cluster(run, cluster, ClusterStatus::Operating).await
    }

    async fn rollback(&self, run: &mut Run) -> ActionResult {
        let cluster = parse_id(run, key::CLUSTER_ID)?;
        Level::Cluster.restore(run, cluster).await
    }
}

#[cfg(test)]
mod tests {
    use crate::actions::Registry;
    use crate::dag::rollout::{agent_batch, cluster_restart, zone_operation};
    use crate::dag::templates::Template;

    #[test]
    fn every_rollout_class_has_an_action() {
        let r = Registry::standard();
        let mut nodes = cluster_restart(&[(1, "z1"), (2, "z2")]);
        for t in [
            Template::RestartObserver,
            Template::StartObserver,
            Template::StopObserver,
        ] {
            nodes.extend(zone_operation(t, 3, "z3"));
        }
        nodes.extend(agent_batch());
        for n in nodes {
            assert!(r.contains(&n.class_name), "{}", n.class_name);
        }
    }
}
