//! taskd's operations over many servers or hosts: a rolling restart of a
//! cluster zone by zone, restart/start/stop of every server of one zone, and
//! an agent restart across hosts (DAGs from `crate::dag::rollout`).
//!
//! Guards: the cluster, zone, servers and hosts must exist; every server
//! must be in a state the seed operation accepts; no agent may be
//! RESTARTING. A cluster or zone task holds its cluster (`cluster:{id}`, so
//! two of them on one cluster exclude each other) and each of its servers
//! (`server:{id}`, so it excludes any task on one of them); an agent batch
//! holds each of its hosts (`host:{id}`).

use super::{Error, Operation, Prepared, Result, ServerOperation, MAX_CONCURRENCY};
use crate::dag::rollout::{self, Rollout, HOST_IDS, SERVER_IDS, ZONE_IDS};
use crate::dag::templates::Template;
use crate::model::ocp::{key, status_key, Level, Phase};
use crate::model::Context;
use crate::store::inventory::{self, AgentStatus, ClusterRow, ServerRow, ZoneRow};
use async_trait::async_trait;
use sqlx::PgPool;

/// Most hosts in one agent batch.
pub const MAX_BATCH_HOSTS: usize = 1000;

/// Restart every (chosen) server of a cluster, zone after zone.
#[derive(Debug, Clone)]
pub struct ClusterRestart {
    pub cluster: i64,
    pub force: bool,
    /// Zones to restart, in this order (None: every zone, in id order).
    pub zone_names: Option<Vec<String>>,
    /// Servers to restart (None: every server of the chosen zones).
    pub server_ids: Option<Vec<i64>>,
}

/// Restart, start or stop every server of one zone.
#[derive(Debug, Clone)]
pub struct ZoneOperation {
    pub template: Template,
    pub force: bool,
    pub cluster: i64,
    pub zone: String,
}

/// Restart the agents of many hosts, at most `parallelism` at once.
#[derive(Debug, Clone)]
pub struct AgentBatch {
    pub hosts: Vec<i64>,
    pub parallelism: i32,
}

/// A zone of a multi-server task with the servers it works on.
struct Part {
    zone: ZoneRow,
    servers: Vec<ServerRow>,
}

fn invalid(field: &'static str, value: impl Into<serde_json::Value>, message: &str) -> Error {
    Error::Invalid {
        field,
        value: value.into(),
        message: message.to_string(),
    }
}

async fn cluster_inventory(
    pool: &PgPool,
    cluster: i64,
) -> Result<(ClusterRow, Vec<ZoneRow>, Vec<ServerRow>)> {
    let c = inventory::get_cluster(pool, cluster)
        .await?
        .ok_or(Error::ClusterNotFound(cluster))?;
    let mut zones = inventory::zones_of_clusters(pool, &[cluster]).await?;
    zones.sort_by_key(|z| z.id);
    let mut servers = inventory::servers_of_cluster(pool, cluster).await?;
    servers.sort_by_key(|s| s.id);
    Ok((c, zones, servers))
}

impl ClusterRestart {
    /// The zones (in rollout order) and servers the restart works on.
    fn choose(&self, zones: Vec<ZoneRow>, servers: Vec<ServerRow>) -> Result<Vec<Part>> {
        let chosen: Vec<ZoneRow> =
            match &self.zone_names {
                None => zones,
                Some(names) => {
                    let mut out: Vec<ZoneRow> = Vec::with_capacity(names.len());
                    for n in names {
                        if out.iter().any(|z| &z.name == n) {
                            return Err(invalid("zoneNames", n.clone(), "names a zone twice"));
                        }
                        let z = zones.iter().find(|z| &z.name == n).ok_or_else(|| {
                            Error::ZoneNotFound {
                                cluster: self.cluster,
                                zone: n.clone(),
                            }
                        })?;
                        out.push(z.clone());
                    }
                    out
                }
            };
        if let Some(ids) = &self.server_ids {
            for (i, id) in ids.iter().enumerate() {
                if ids[..i].contains(id) {
                    return Err(invalid("serverIds", *id, "names a server twice"));
                }
                let s = servers
                    .iter()
                    .find(|s| s.id == *id)
                    .ok_or(Error::ServerNotInCluster {
                        server: *id,
                        cluster: self.cluster,
                    })?;
                if !chosen.iter().any(|z| z.id == s.zone_id) {
                    return Err(invalid(
                        "serverIds",
                        *id,
                        "is not in one of the chosen zoneNames",
                    ));
                }
            }
        }
        let parts: Vec<Part> = chosen
            .into_iter()
            .map(|zone| Part {
                servers: servers
                    .iter()
                    .filter(|s| s.zone_id == zone.id)
                    .filter(|s| {
                        self.server_ids
                            .as_ref()
                            .is_none_or(|ids| ids.contains(&s.id))
                    })
                    .cloned()
                    .collect(),
                zone,
            })
            .filter(|p| !p.servers.is_empty())
            .collect();
        if parts.is_empty() {
            return Err(invalid(
                "serverIds",
                serde_json::Value::Null,
                "the restart would touch no server",
            ));
        }
        Ok(parts)
    }
}

/// Every server must be in a state the seed operation accepts.
fn guard(template: Template, force: bool, cluster: i64, parts: &[Part]) -> Result<()> {
    for s in parts.iter().flat_map(|p| &p.servers) {
        let op = ServerOperation {
            template,
            force,
            cluster,
            server: s.id,
        };
        if !op.accepts(s.status) {
            return Err(Error::ServerState {
                server: s.id,
                status: s.status,
                wanted: op.wanted(),
            });
        }
    }
    Ok(())
}

/// The context of a multi-server task: the seed's cluster keys, every
/// server (`server_ids`) and zone (`zone_ids`, `zone_names`), each zone's
/// servers (the split of its steps) and its former status.
fn multi_context(cluster: &ClusterRow, parts: &[Part], template: Template, force: bool) -> Context {
    let mut c = Context::default();
    c.set(key::CLUSTER_NAME, cluster.name.clone());
    c.set(key::CLUSTER_ID, cluster.id.to_string());
    c.set(key::AGENT_SERVICE_NAME, "agent");
    c.set(key::PROHIBIT_ROLLBACK, "false");
    c.set(
        status_key(Phase::Former, Level::Cluster),
        cluster.status.as_str(),
    );
    c.set(status_key(Phase::Target, Level::Cluster), "RUNNING");
    let zone_target = if template == Template::StopObserver {
        "STOPPED"
    } else {
        "RUNNING"
    };
    c.set(status_key(Phase::Target, Level::Zone), zone_target);
    if force {
        c.set(key::FORCE, "true");
    }
    let mut all = Vec::new();
    for p in parts {
        c.set(rollout::former_zone_key(p.zone.id), p.zone.status.as_str());
        let ids: Vec<String> = p.servers.iter().map(|s| s.id.to_string()).collect();
        all.extend(ids.iter().cloned());
        c.list_map.insert(rollout::zone_servers_key(p.zone.id), ids);
    }
    c.list_map.insert(SERVER_IDS.into(), all);
    c.list_map.insert(
        ZONE_IDS.into(),
        parts.iter().map(|p| p.zone.id.to_string()).collect(),
    );
    c.list_map.insert(
        "zone_names".into(),
        parts.iter().map(|p| p.zone.name.clone()).collect(),
    );
    c
}

/// What a cluster or zone task holds: its cluster and each server.
fn multi_holds(cluster: i64, parts: &[Part]) -> Vec<String> {
    let mut holds = vec![format!("cluster:{cluster}")];
    holds.extend(
        parts
            .iter()
            .flat_map(|p| &p.servers)
            .map(|s| format!("server:{}", s.id)),
    );
    holds
}

#[async_trait]
impl Operation for ClusterRestart {
    fn template(&self) -> Template {
        Template::RestartObserver
    }

    fn task_name(&self) -> &'static str {
        Rollout::ClusterRestart.task_name()
    }

    fn target_key(&self) -> String {
        format!("cluster:{}", self.cluster)
    }

    fn cluster(&self) -> Option<i64> {
        Some(self.cluster)
    }

    async fn prepare(&self, pool: &PgPool) -> Result<Prepared> {
        let (cluster, zones, servers) = cluster_inventory(pool, self.cluster).await?;
        let parts = self.choose(zones, servers)?;
        guard(self.template(), self.force, self.cluster, &parts)?;
        let ids: Vec<(i64, &str)> = parts
            .iter()
            .map(|p| (p.zone.id, p.zone.name.as_str()))
            .collect();
        Ok(Prepared {
            cluster_id: Some(cluster.id),
            host_id: None,
            server_id: None,
            context: multi_context(&cluster, &parts, self.template(), self.force),
            nodes: rollout::cluster_restart(&ids),
            holds: multi_holds(cluster.id, &parts),
            max_concurrency: MAX_CONCURRENCY,
        })
    }
}

#[async_trait]
impl Operation for ZoneOperation {
    fn template(&self) -> Template {
        self.template
    }

    fn task_name(&self) -> &'static str {
        Rollout::Zone(self.template).task_name()
    }

    fn target_key(&self) -> String {
        format!("zone:{}:{}", self.cluster, self.zone)
    }

    fn cluster(&self) -> Option<i64> {
        Some(self.cluster)
    }

    async fn prepare(&self, pool: &PgPool) -> Result<Prepared> {
        let (cluster, zones, servers) = cluster_inventory(pool, self.cluster).await?;
        let zone = zones
            .into_iter()
            .find(|z| z.name == self.zone)
            .ok_or_else(|| Error::ZoneNotFound {
                cluster: self.cluster,
                zone: self.zone.clone(),
            })?;
        let own: Vec<ServerRow> = servers
            .into_iter()
            .filter(|s| s.zone_id == zone.id)
            .collect();
        if own.is_empty() {
            return Err(invalid(
                "zoneName",
                self.zone.clone(),
                "the zone has no servers",
            ));
        }
        let parts = [Part { zone, servers: own }];
        guard(self.template, self.force, self.cluster, &parts)?;
        let zone = &parts[0].zone;
        let mut context = multi_context(&cluster, &parts, self.template, self.force);
        context.set(key::ZONE_NAME, zone.name.clone());
        Ok(Prepared {
            cluster_id: Some(cluster.id),
            host_id: None,
            server_id: None,
            context,
            nodes: rollout::zone_operation(self.template, zone.id, &zone.name),
            holds: multi_holds(cluster.id, &parts),
            max_concurrency: MAX_CONCURRENCY,
        })
    }
}

impl AgentBatch {
    /// Checks the request: 1 to [`MAX_BATCH_HOSTS`] distinct positive host
    /// ids, a parallelism between 1 and [`MAX_BATCH_HOSTS`] (default 10).
    pub fn new(hosts: Vec<i64>, parallelism: Option<i32>) -> Result<AgentBatch> {
        if hosts.is_empty() || hosts.len() > MAX_BATCH_HOSTS {
            return Err(invalid(
                "hostIds",
                hosts.len(),
                &format!("must list 1 to {MAX_BATCH_HOSTS} hosts"),
            ));
        }
        for (i, id) in hosts.iter().enumerate() {
            if *id < 1 {
                return Err(invalid("hostIds", *id, "must be positive ids"));
            }
            if hosts[..i].contains(id) {
                return Err(invalid("hostIds", *id, "names a host twice"));
            }
        }
        let parallelism = parallelism.unwrap_or(MAX_CONCURRENCY);
        if !(1..=MAX_BATCH_HOSTS as i32).contains(&parallelism) {
            return Err(invalid(
                "parallelism",
                parallelism,
                &format!("must be between 1 and {MAX_BATCH_HOSTS}"),
            ));
        }
        Ok(AgentBatch { hosts, parallelism })
    }
}

#[async_trait]
impl Operation for AgentBatch {
    fn template(&self) -> Template {
        Template::RestartAgent
    }

    fn task_name(&self) -> &'static str {
        Rollout::AgentBatch.task_name()
    }

    fn target_key(&self) -> String {
        let mut sorted = self.hosts.clone();
        sorted.sort_unstable();
        let listed: Vec<String> = sorted.iter().map(i64::to_string).collect();
        format!("hosts:{}", listed.join(","))
    }

    async fn prepare(&self, pool: &PgPool) -> Result<Prepared> {
        let hosts = inventory::get_hosts(pool, &self.hosts).await?;
        if let Some(missing) = self
            .hosts
            .iter()
            .find(|id| !hosts.iter().any(|h| h.id == **id))
        {
            return Err(Error::HostNotFound(*missing));
        }
        if let Some(h) = hosts
            .iter()
            .find(|h| h.agent_status == AgentStatus::Restarting)
        {
            return Err(Error::AgentRestarting(h.id));
        }
        let mut context = Context::default();
        context.set(key::PROHIBIT_ROLLBACK, "false");
        context.list_map.insert(
            HOST_IDS.into(),
            self.hosts.iter().map(i64::to_string).collect(),
        );
        Ok(Prepared {
            cluster_id: None,
            host_id: None,
            server_id: None,
            context,
            nodes: rollout::agent_batch(),
            holds: self.hosts.iter().map(|h| format!("host:{h}")).collect(),
            max_concurrency: self.parallelism,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_requests_are_checked() {
        let b = AgentBatch::new(vec![3, 1], Some(2)).unwrap();
        assert_eq!((b.hosts.clone(), b.parallelism), (vec![3, 1], 2));
        assert_eq!(b.target_key(), "hosts:1,3");
        assert_eq!(
            AgentBatch::new(vec![1], None).unwrap().parallelism,
            MAX_CONCURRENCY
        );
        for (hosts, p) in [
            (vec![], None),
            (vec![1, 1], None),
            (vec![0], None),
            (vec![1], Some(0)),
            (vec![1], Some(1001)),
            ((1..=1001).collect(), None),
        ] {
            assert!(
                AgentBatch::new(hosts.clone(), p).is_err(),
                "{hosts:?} {p:?}"
            );
        }
    }
}
