//! Task DAG specifications: validation, parallel split and topological order.
//! Pure: a `TaskSpec` becomes a `Plan` (or a clear error) before anything is
//! written.

pub mod rollout;
pub mod templates;

use crate::model::Context;
use std::collections::{BTreeSet, HashMap};

/// One node of a DAG as a caller describes it; edges name upstream nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    pub description: String,
    pub class_name: String,
    pub timeout_s: i32,
    pub retry_limit: i32,
    pub prohibit_rollback: bool,
    /// Split this node into one parallel copy per value of this listMap key.
    pub split_on: Option<String>,
    pub upstreams: Vec<String>,
}

impl NodeSpec {
    pub fn new(name: &str, class_name: &str, timeout_s: i32) -> Self {
        NodeSpec {
            name: name.to_string(),
            description: name.to_string(),
            class_name: class_name.to_string(),
            timeout_s,
            retry_limit: 0,
            prohibit_rollback: false,
            split_on: None,
            upstreams: Vec::new(),
        }
    }

    pub fn after(mut self, upstreams: &[&str]) -> Self {
        self.upstreams = upstreams.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn retries(mut self, retry_limit: i32) -> Self {
        self.retry_limit = retry_limit;
        self
    }

    pub fn split_on(mut self, key: &str) -> Self {
        self.split_on = Some(key.to_string());
        self
    }
}

/// A DAG to run, with the task's initial context.
#[derive(Debug, Clone)]
pub struct DagSpec {
    pub nodes: Vec<NodeSpec>,
    pub context: Context,
}

/// A validated, expanded DAG in topological order: node `i` has series id `i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub nodes: Vec<PlannedNode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedNode {
    pub spec: NodeSpec,
    pub parallel_idx: i32,
    /// Indexes into `Plan::nodes`, all smaller than this node's own.
    pub upstreams: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    #[error("the DAG has no nodes")]
    Empty,
    #[error("node {index} has an empty {field}")]
    EmptyField { index: usize, field: &'static str },
    #[error("node name {0:?} is used more than once; names must be unique")]
    DuplicateName(String),
    #[error("node {node:?} names unknown upstream {upstream:?}")]
    UnknownUpstream { node: String, upstream: String },
    #[error("node {0:?} lists itself as an upstream")]
    SelfEdge(String),
    #[error("the DAG has a cycle through {0:?}")]
    Cycle(Vec<String>),
    #[error("node {node:?} has timeout {timeout}; it must be between 1 and 604800 seconds")]
    BadTimeout { node: String, timeout: i32 },
    #[error("node {node:?} has retry limit {limit}; it must be between 0 and 100")]
    BadRetryLimit { node: String, limit: i32 },
    #[error("node {node:?} splits on listMap key {key:?}, which is missing or empty")]
    BadSplit { node: String, key: String },
}

/// Validates a DAG and expands parallel splits.
pub fn plan(spec: &DagSpec) -> Result<Plan, DagError> {
    if spec.nodes.is_empty() {
        return Err(DagError::Empty);
    }
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, n) in spec.nodes.iter().enumerate() {
        for (field, value) in [("name", &n.name), ("class_name", &n.class_name)] {
            if value.trim().is_empty() {
                return Err(DagError::EmptyField { index: i, field });
            }
        }
        if by_name.insert(n.name.as_str(), i).is_some() {
            return Err(DagError::DuplicateName(n.name.clone()));
        }
        if !(1..=604_800).contains(&n.timeout_s) {
            return Err(DagError::BadTimeout {
                node: n.name.clone(),
                timeout: n.timeout_s,
            });
        }
        if !(0..=100).contains(&n.retry_limit) {
            return Err(DagError::BadRetryLimit {
                node: n.name.clone(),
                limit: n.retry_limit,
            });
        }
        if let Some(key) = &n.split_on {
            if spec.context.list(key).is_empty() {
                return Err(DagError::BadSplit {
                    node: n.name.clone(),
                    key: key.clone(),
                });
            }
        }
    }
    // Edges by spec index, deduplicated.
    let mut ups: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); spec.nodes.len()];
    for (i, n) in spec.nodes.iter().enumerate() {
        for u in &n.upstreams {
            let Some(&j) = by_name.get(u.as_str()) else {
                return Err(DagError::UnknownUpstream {
                    node: n.name.clone(),
                    upstream: u.clone(),
                });
            };
            if j == i {
                return Err(DagError::SelfEdge(n.name.clone()));
            }
            ups[i].insert(j);
        }
    }
    let order = topo_order(&ups).map_err(|stuck| {
        DagError::Cycle(stuck.iter().map(|&i| spec.nodes[i].name.clone()).collect())
    })?;

    // Expand in topological order; each spec node maps to its copies. A
    // split node after a node split on the same key follows it copy by
    // copy (one chain per list value); any other edge joins every copy.
    let mut copies: Vec<Vec<usize>> = vec![Vec::new(); spec.nodes.len()];
    let mut expanded: Vec<(usize, PlannedNode)> = Vec::new();
    for (pos, &i) in order.iter().enumerate() {
        let n = &spec.nodes[i];
        let widths: Vec<i32> = match &n.split_on {
            Some(key) => (0..spec.context.list(key).len() as i32).collect(),
            None => vec![-1],
        };
        for parallel_idx in widths {
            let upstreams: Vec<usize> = ups[i]
                .iter()
                .flat_map(|&j| {
                    let same_split = n.split_on.is_some() && spec.nodes[j].split_on == n.split_on;
                    if same_split {
                        vec![copies[j][parallel_idx as usize]]
                    } else {
                        copies[j].clone()
                    }
                })
                .collect();
            copies[i].push(expanded.len());
            expanded.push((
                pos,
                PlannedNode {
                    spec: n.clone(),
                    parallel_idx,
                    upstreams,
                },
            ));
        }
    }
    Ok(Plan {
        nodes: branch_major(expanded),
    })
}

/// Orders expanded nodes topologically, preferring (parallel index, spec
/// position): the chain of one split copy comes before the next copy's, so
/// the engine, which fills free slots in series order, finishes a branch it
/// started before it starts another (a concurrency limit of N then means N
/// branches at once, not N steps of any branches).
fn branch_major(expanded: Vec<(usize, PlannedNode)>) -> Vec<PlannedNode> {
    let n = expanded.len();
    let mut remaining: Vec<usize> = expanded.iter().map(|(_, p)| p.upstreams.len()).collect();
    let mut downs: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, (_, p)) in expanded.iter().enumerate() {
        for &u in &p.upstreams {
            downs[u].push(i);
        }
    }
    let key = |i: usize| (expanded[i].1.parallel_idx, expanded[i].0, i);
    let mut ready: BTreeSet<(i32, usize, usize)> =
        (0..n).filter(|&i| remaining[i] == 0).map(key).collect();
    let mut new_index = vec![usize::MAX; n];
    let mut order = Vec::with_capacity(n);
    while let Some((_, _, i)) = ready.pop_first() {
        new_index[i] = order.len();
        order.push(i);
        for &d in &downs[i] {
            remaining[d] -= 1;
            if remaining[d] == 0 {
                ready.insert(key(d));
            }
        }
    }
    // The spec was acyclic, so its expansion is: every node was ordered.
    let mut slots: Vec<Option<PlannedNode>> = expanded.into_iter().map(|(_, p)| Some(p)).collect();
    order
        .into_iter()
        .filter_map(|i| slots[i].take())
        .map(|mut p| {
            p.upstreams = p.upstreams.iter().map(|&u| new_index[u]).collect();
            p.upstreams.sort_unstable();
            p
        })
        .collect()
}

/// Kahn's algorithm, ties broken by index so the order is stable. On a cycle
/// returns the nodes that could not be ordered.
fn topo_order(ups: &[BTreeSet<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let n = ups.len();
    let mut remaining: Vec<usize> = ups.iter().map(BTreeSet::len).collect();
    let mut downs: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, us) in ups.iter().enumerate() {
        for &u in us {
            downs[u].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| remaining[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &d in &downs[i] {
            remaining[d] -= 1;
            if remaining[d] == 0 {
                ready.insert(d);
            }
        }
    }
    if order.len() == n {
        Ok(order)
    } else {
        Err((0..n).filter(|&i| remaining[i] > 0).collect())
    }
}

impl Plan {
    /// Downstream indexes of every node.
    pub fn downstreams(&self) -> Vec<Vec<usize>> {
        let mut downs = vec![Vec::new(); self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &u in &n.upstreams {
                downs[u].push(i);
            }
        }
        downs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(nodes: Vec<NodeSpec>) -> DagSpec {
        DagSpec {
            nodes,
            context: Context::default(),
        }
    }

    fn names(p: &Plan) -> Vec<&str> {
        p.nodes.iter().map(|n| n.spec.name.as_str()).collect()
    }

    #[test]
    fn diamond_orders_topologically() {
        let p = plan(&spec(vec![
            NodeSpec::new("d", "x", 1).after(&["b", "c"]),
            NodeSpec::new("b", "x", 1).after(&["a"]),
            NodeSpec::new("c", "x", 1).after(&["a"]),
            NodeSpec::new("a", "x", 1),
        ]))
        .unwrap();
        assert_eq!(names(&p), ["a", "b", "c", "d"]);
        assert_eq!(p.nodes[3].upstreams, [1, 2]);
        assert_eq!(p.downstreams()[0], [1, 2]);
    }

    #[test]
    fn refuses_invalid_dags() {
        assert_eq!(plan(&spec(vec![])), Err(DagError::Empty));
        assert_eq!(
            plan(&spec(vec![
                NodeSpec::new("a", "x", 1),
                NodeSpec::new("a", "x", 1)
            ])),
            Err(DagError::DuplicateName("a".into()))
        );
        assert!(matches!(
            plan(&spec(vec![NodeSpec::new("a", "x", 1).after(&["zz"])])),
            Err(DagError::UnknownUpstream { .. })
        ));
        assert_eq!(
            plan(&spec(vec![NodeSpec::new("a", "x", 1).after(&["a"])])),
            Err(DagError::SelfEdge("a".into()))
        );
        assert_eq!(
            plan(&spec(vec![
                NodeSpec::new("root", "x", 1),
                NodeSpec::new("a", "x", 1).after(&["root", "c"]),
                NodeSpec::new("b", "x", 1).after(&["a"]),
                NodeSpec::new("c", "x", 1).after(&["b"]),
            ])),
            Err(DagError::Cycle(vec!["a".into(), "b".into(), "c".into()]))
        );
        assert!(matches!(
            plan(&spec(vec![NodeSpec::new("a", "x", 0)])),
            Err(DagError::BadTimeout { .. })
        ));
        assert!(matches!(
            plan(&spec(vec![NodeSpec::new("", "x", 1)])),
            Err(DagError::EmptyField { field: "name", .. })
        ));
        assert!(matches!(
            plan(&spec(vec![NodeSpec::new("a", "x", 1).split_on("hosts")])),
            Err(DagError::BadSplit { .. })
        ));
    }

    #[test]
    fn split_expands_parallel_copies_with_fan_in_and_out() {
        let mut ctx = Context::default();
        ctx.list_map
            .insert("ids".into(), vec!["1".into(), "2".into(), "3".into()]);
        let p = plan(&DagSpec {
            nodes: vec![
                NodeSpec::new("a", "x", 1),
                NodeSpec::new("b", "x", 1).after(&["a"]).split_on("ids"),
                NodeSpec::new("c", "x", 1).after(&["b"]),
            ],
            context: ctx,
        })
        .unwrap();
        assert_eq!(names(&p), ["a", "b", "b", "b", "c"]);
        let idx: Vec<i32> = p.nodes.iter().map(|n| n.parallel_idx).collect();
        assert_eq!(idx, [-1, 0, 1, 2, -1]);
        assert_eq!(p.nodes[2].upstreams, [0]);
        assert_eq!(p.nodes[4].upstreams, [1, 2, 3]);
    }

    #[test]
    fn nodes_split_on_one_key_chain_copy_by_copy_in_branch_major_order() {
        let mut ctx = Context::default();
        ctx.list_map
            .insert("ids".into(), vec!["1".into(), "2".into()]);
        let p = plan(&DagSpec {
            nodes: vec![
                NodeSpec::new("a", "x", 1),
                NodeSpec::new("b", "x", 1).after(&["a"]).split_on("ids"),
                NodeSpec::new("c", "x", 1).after(&["b"]).split_on("ids"),
                NodeSpec::new("d", "x", 1).after(&["c"]),
            ],
            context: ctx,
        })
        .unwrap();
        let got: Vec<(&str, i32, Vec<usize>)> = p
            .nodes
            .iter()
            .map(|n| (n.spec.name.as_str(), n.parallel_idx, n.upstreams.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("a", -1, vec![]),
                ("b", 0, vec![0]),
                ("c", 0, vec![1]),
                ("b", 1, vec![0]),
                ("c", 1, vec![3]),
                ("d", -1, vec![2, 4]),
            ]
        );
    }
}
