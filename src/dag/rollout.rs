//! The DAGs of operations over many servers or hosts, taskd's extensions to
//! OCP's four templates: a rolling cluster restart (zone after zone), one
//! operation on every server of a zone, and an agent restart across hosts.
//!
//! Each is built from a seed template's steps. A server's (or host's) steps
//! run as one branch of a parallel split over a listMap list, copy `i` of a
//! step following copy `i` of the step before; a zone's branches meet in one
//! fan-in ("Update zone status"), which the next zone waits for. Steps that
//! work on a zone carry its id as the className parameter `zone_id`, so an
//! action knows which zone's list its `parallelIdx` indexes.

use super::templates::{Template, OCP, TEMPLATE_RETRY_LIMIT};
use super::NodeSpec;

/// className parameter naming the zone a step works on.
pub const ZONE_PARAM: &str = "zone_id";

/// listMap key of an agent batch's host ids (the split of its steps).
pub const HOST_IDS: &str = "host_ids";

/// listMap key of every server id a multi-server task works on (OCP's).
pub const SERVER_IDS: &str = crate::model::ocp::key::SERVER_IDS;

/// listMap key of the zone ids of a multi-server task, in rollout order.
pub const ZONE_IDS: &str = "zone_ids";

/// listMap key of one zone's server ids: the split of that zone's steps.
pub fn zone_servers_key(zone_id: i64) -> String {
    format!("zone_server_ids:{zone_id}")
}

/// stringMap key of a zone's status before the task, per zone.
pub fn former_zone_key(zone_id: i64) -> String {
    format!("former_zone_status:{zone_id}")
}

/// stringMap key of a server's status before the task, per server: one key
/// per branch, so that the zone's fan-in merges them without conflict.
pub fn former_server_key(server_id: i64) -> String {
    format!("former_server_status:{server_id}")
}

/// The first step of a cluster restart.
const PREPARE_CLUSTER: (&str, &str, i32) = (
    "Prepare restart OB cluster",
    "cluster.PrepareRestartObClusterTask",
    300,
);

/// The last steps of every server template, which are not the server's own:
/// the zone's status, then the cluster's.
const ZONE_STEP: &str = "Update zone status";
const CLUSTER_STEPS: usize = 2;

/// What a multi-target task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollout {
    /// Restart every (chosen) server of a cluster, zone after zone.
    ClusterRestart,
    /// Restart, start or stop every server of one zone.
    Zone(Template),
    /// Restart the agents of many hosts, at most N at once.
    AgentBatch,
}

impl Rollout {
    pub fn task_name(self) -> &'static str {
        match self {
            Rollout::ClusterRestart => "Restart OB cluster",
            Rollout::Zone(Template::StartObserver) => "Start OB zone",
            Rollout::Zone(Template::StopObserver) => "Stop OB zone",
            Rollout::Zone(_) => "Restart OB zone",
            Rollout::AgentBatch => "Restart OCP agents",
        }
    }
}

fn node(name: &str, class: &str, timeout: i32) -> NodeSpec {
    NodeSpec::new(name, &format!("{OCP}.{class}"), timeout).retries(TEMPLATE_RETRY_LIMIT)
}

/// The name of a zone's copy of a step.
pub fn zone_step_name(step: &str, zone_name: &str) -> String {
    format!("{step} ({zone_name})")
}

/// One zone's part: the template's server steps split over the zone's
/// servers, then its fan-in. `after` is the node the zone waits for.
/// Returns the nodes; the last one is the fan-in.
fn zone_part(
    template: Template,
    zone_id: i64,
    zone_name: &str,
    after: Option<&str>,
) -> Vec<NodeSpec> {
    let steps = template.steps();
    let own = &steps[..steps.len() - CLUSTER_STEPS];
    let split = zone_servers_key(zone_id);
    let mut nodes: Vec<NodeSpec> = Vec::with_capacity(own.len());
    for (i, (name, class, timeout)) in own.iter().enumerate() {
        let class = format!("{class}?{ZONE_PARAM}={zone_id}");
        let mut n = node(&zone_step_name(name, zone_name), &class, *timeout);
        n.description = name.to_string();
        if *name != ZONE_STEP {
            n = n.split_on(&split);
        }
        let prev = if i == 0 {
            after.map(str::to_string)
        } else {
            Some(nodes[i - 1].name.clone())
        };
        nodes.push(match prev {
            Some(p) => n.after(&[p.as_str()]),
            None => n,
        });
    }
    nodes
}

/// The cluster's steps after the zones: sync cluster info, update its
/// status.
fn cluster_tail(template: Template, after: &str) -> Vec<NodeSpec> {
    let steps = template.steps();
    let tail = &steps[steps.len() - CLUSTER_STEPS..];
    let mut nodes: Vec<NodeSpec> = Vec::new();
    let mut prev = after.to_string();
    for (name, class, timeout) in tail {
        nodes.push(node(name, class, *timeout).after(&[prev.as_str()]));
        prev = name.to_string();
    }
    nodes
}

/// A rolling restart: prepare the cluster, then each zone in turn (its
/// servers in parallel, then its status), then the cluster's steps.
/// `zones` are (zone id, zone name) in rollout order.
pub fn cluster_restart(zones: &[(i64, &str)]) -> Vec<NodeSpec> {
    let (name, class, timeout) = PREPARE_CLUSTER;
    let mut nodes = vec![node(name, class, timeout)];
    let mut last = name.to_string();
    for (id, zone) in zones {
        let part = zone_part(Template::RestartObserver, *id, zone, Some(&last));
        last = part.last().map(|n| n.name.clone()).unwrap_or(last);
        nodes.extend(part);
    }
    nodes.extend(cluster_tail(Template::RestartObserver, &last));
    nodes
}

/// One zone: the template's server steps on every server of the zone in
/// parallel, then the zone's and the cluster's steps.
pub fn zone_operation(template: Template, zone_id: i64, zone_name: &str) -> Vec<NodeSpec> {
    let mut nodes = zone_part(template, zone_id, zone_name, None);
    let last = nodes.last().map(|n| n.name.clone()).unwrap_or_default();
    nodes.extend(cluster_tail(template, &last));
    nodes
}

/// The agent-restart template once per host of the `host_ids` list: one
/// chain per host and no fan-in, so a host that fails stops only its own
/// chain.
pub fn agent_batch() -> Vec<NodeSpec> {
    Template::RestartAgent
        .nodes()
        .into_iter()
        .map(|n| n.split_on(HOST_IDS))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::{plan, DagSpec, Plan};
    use crate::model::Context;

    fn ctx(lists: &[(String, usize)]) -> Context {
        let mut c = Context::default();
        for (k, n) in lists {
            c.list_map
                .insert(k.clone(), (0..*n).map(|i| (100 + i).to_string()).collect());
        }
        c
    }

    fn index(p: &Plan, name: &str, idx: i32) -> usize {
        p.nodes
            .iter()
            .position(|n| n.spec.name == name && n.parallel_idx == idx)
            .unwrap_or_else(|| panic!("no {name}[{idx}]"))
    }

    #[test]
    fn a_cluster_restart_rolls_zone_by_zone_with_one_fan_in_each() {
        let zones = [(1, "z1"), (2, "z2"), (3, "z3")];
        let c = ctx(&[
            (zone_servers_key(1), 2),
            (zone_servers_key(2), 2),
            (zone_servers_key(3), 1),
        ]);
        let p = plan(&DagSpec {
            nodes: cluster_restart(&zones),
            context: c,
        })
        .unwrap();
        let per_server = Template::RestartObserver.steps().len() - 3;
        assert_eq!(p.nodes.len(), 1 + 5 * per_server + 3 + 2);
        assert_eq!(p.nodes[0].spec.name, "Prepare restart OB cluster");
        let prepare = |z: &str, i| index(&p, &zone_step_name("Prepare restart observer", z), i);
        let last = |z: &str, i| index(&p, &zone_step_name("Update observer status", z), i);
        let fan_in = |z: &str| index(&p, &zone_step_name("Update zone status", z), -1);
        // Zone 1's branches start after the cluster's preparation.
        assert_eq!(p.nodes[prepare("z1", 0)].upstreams, [0]);
        assert_eq!(p.nodes[prepare("z1", 1)].upstreams, [0]);
        // One fan-in per zone, over exactly that zone's branches.
        assert_eq!(
            p.nodes[fan_in("z1")].upstreams,
            [last("z1", 0), last("z1", 1)]
        );
        assert_eq!(p.nodes[fan_in("z3")].upstreams, [last("z3", 0)]);
        // The next zone waits for the previous zone's fan-in.
        assert_eq!(p.nodes[prepare("z2", 0)].upstreams, [fan_in("z1")]);
        assert_eq!(p.nodes[prepare("z3", 0)].upstreams, [fan_in("z2")]);
        // Within a branch, copy i follows copy i.
        let stop = index(&p, &zone_step_name("Stop server", "z2"), 1);
        assert_eq!(p.nodes[stop].upstreams, [prepare("z2", 1)]);
        assert_eq!(p.nodes[stop].spec.description, "Stop server");
        assert!(p.nodes[stop]
            .spec
            .class_name
            .ends_with("StopObServerTask?zone_id=2"));
        // The cluster's steps close the DAG.
        let sync = index(&p, "Sync cluster info", -1);
        assert_eq!(p.nodes[sync].upstreams, [fan_in("z3")]);
        assert_eq!(
            p.nodes.last().unwrap().spec.name,
            "Update OB cluster status"
        );
        // A branch's chain is contiguous: the engine finishes a started
        // server before it starts another.
        for z in ["z1", "z2"] {
            let first = prepare(z, 0);
            assert_eq!(last(z, 0), first + per_server - 1);
            assert_eq!(prepare(z, 1), first + per_server);
        }
    }

    #[test]
    fn a_zone_operation_splits_its_template_over_the_zone() {
        for t in [
            Template::RestartObserver,
            Template::StartObserver,
            Template::StopObserver,
        ] {
            let p = plan(&DagSpec {
                nodes: zone_operation(t, 7, "zone2"),
                context: ctx(&[(zone_servers_key(7), 3)]),
            })
            .unwrap();
            let own = t.steps().len() - 3;
            assert_eq!(p.nodes.len(), 3 * own + 3, "{t:?}");
            let roots: Vec<i32> = p
                .nodes
                .iter()
                .filter(|n| n.upstreams.is_empty())
                .map(|n| n.parallel_idx)
                .collect();
            assert_eq!(roots, [0, 1, 2], "{t:?}: one root per server");
            let fan_in = index(&p, "Update zone status (zone2)", -1);
            assert_eq!(p.nodes[fan_in].upstreams.len(), 3);
            assert!(p.nodes[fan_in].spec.class_name.ends_with("?zone_id=7"));
        }
    }

    #[test]
    fn an_agent_batch_is_one_chain_per_host() {
        let p = plan(&DagSpec {
            nodes: agent_batch(),
            context: ctx(&[(HOST_IDS.to_string(), 4)]),
        })
        .unwrap();
        let steps = Template::RestartAgent.steps().len();
        assert_eq!(p.nodes.len(), 4 * steps);
        for h in 0..4 {
            for s in 0..steps {
                let n = &p.nodes[h * steps + s];
                assert_eq!(n.parallel_idx, h as i32);
                assert_eq!(n.spec.name, Template::RestartAgent.steps()[s].0);
                let want: Vec<usize> = if s == 0 {
                    vec![]
                } else {
                    vec![h * steps + s - 1]
                };
                assert_eq!(n.upstreams, want);
            }
        }
    }
}
