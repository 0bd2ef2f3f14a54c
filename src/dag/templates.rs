//! The four OCP task templates: step names, order, classNames and timeouts
//! exactly as the seed samples show them.

use super::NodeSpec;

/// Prefix of every OCP className.
pub const OCP: &str = "com.alipay.ocp.service.task.business";

/// Automatic retries of every template step (runs = retries + 1).
pub const TEMPLATE_RETRY_LIMIT: i32 = 2;

/// Which template a task was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    RestartObserver,
    StartObserver,
    StopObserver,
    RestartAgent,
}

impl Template {
    pub fn task_name(self) -> &'static str {
        match self {
            Template::RestartObserver => "Restart OB server",
            Template::StartObserver => "Start OB server",
            Template::StopObserver => "Stop OB server",
            Template::RestartAgent => "Restart OCP agent",
        }
    }

    /// (name, className suffix, timeout seconds), in execution order.
    pub fn steps(self) -> &'static [(&'static str, &'static str, i32)] {
        match self {
            Template::RestartObserver => &[
                (
                    "Prepare restart observer",
                    "server.PrepareRestartObServerTask",
                    300,
                ),
                ("Stop server", "server.StopObServerTask", 300),
                (
                    "Stop observer process",
                    "server.StopObServerProcessTask",
                    1200,
                ),
                (
                    "Start observer process",
                    "server.StartObServerProcessTask",
                    1200,
                ),
                (
                    "Wait observer active",
                    "server.WaitObServerActiveTask",
                    1800,
                ),
                (
                    "Start ocp agent service",
                    "obagent.StartOcpAgentServiceTask",
                    1800,
                ),
                ("Start server", "server.StartObServerTask", 300),
                (
                    "Update observer status",
                    "server.UpdateObServerStatusTask",
                    300,
                ),
                ("Update zone status", "zone.UpdateObZoneStatusTask", 1800),
                ("Sync cluster info", "cluster.SyncClusterInfoTask", 30),
                (
                    "Update OB cluster status",
                    "cluster.UpdateObClusterStatusTask",
                    30,
                ),
            ],
            Template::StartObserver => &[
                (
                    "Prepare start observer",
                    "server.PrepareStartObServerTask",
                    300,
                ),
                (
                    "Start observer process",
                    "server.StartObServerProcessTask",
                    1200,
                ),
                (
                    "Wait observer active",
                    "server.WaitObServerActiveTask",
                    1800,
                ),
                (
                    "Start ocp agent service",
                    "obagent.StartOcpAgentServiceTask",
                    1800,
                ),
                ("Start server", "server.StartObServerTask", 300),
                (
                    "Update observer status",
                    "server.UpdateObServerStatusTask",
                    300,
                ),
                ("Update zone status", "zone.UpdateObZoneStatusTask", 1800),
                ("Sync cluster info", "cluster.SyncClusterInfoTask", 30),
                (
                    "Update OB cluster status",
                    "cluster.UpdateObClusterStatusTask",
                    30,
                ),
            ],
            Template::StopObserver => &[
                (
                    "Prepare stop observer",
                    "server.PrepareStopObServerTask",
                    300,
                ),
                ("Stop server", "server.StopObServerTask", 300),
                (
                    "Stop observer process",
                    "server.StopObServerProcessTask",
                    1200,
                ),
                ("Wait observer stop", "server.WaitObServerStopTask", 1800),
                (
                    "Update observer status",
                    "server.UpdateObServerStatusTask",
                    300,
                ),
                ("Update zone status", "zone.UpdateObZoneStatusTask", 1800),
                ("Sync cluster info", "cluster.SyncClusterInfoTask", 30),
                (
                    "Update OB cluster status",
                    "cluster.UpdateObClusterStatusTask",
                    30,
                ),
            ],
            Template::RestartAgent => &[
                (
                    "Prepare restart OCP agent",
                    "obagent.PrepareRestartOcpAgentTask",
                    60,
                ),
                ("Restart pos proxy", "obagent.RestartPosProxyTask", 60),
                (
                    "Stop all OCP agent processes",
                    "obagent.StopAllOcpAgentProcessesTask",
                    600,
                ),
                (
                    "Start all OCP agent processes",
                    "obagent.StartAllOcpAgentProcessesTask",
                    600,
                ),
                (
                    "Finish OCP agent operation",
                    "obagent.FinishOcpAgentOperationTask",
                    60,
                ),
            ],
        }
    }

    /// The template as a chain of nodes.
    pub fn nodes(self) -> Vec<NodeSpec> {
        let steps = self.steps();
        steps
            .iter()
            .enumerate()
            .map(|(i, (name, class, timeout))| {
                let node = NodeSpec::new(name, &format!("{OCP}.{class}"), *timeout)
                    .retries(TEMPLATE_RETRY_LIMIT);
                if i == 0 {
                    node
                } else {
                    node.after(&[steps[i - 1].0])
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::{plan, DagSpec};
    use crate::model::Context;

    #[test]
    fn every_template_is_a_valid_chain() {
        for t in [
            Template::RestartObserver,
            Template::StartObserver,
            Template::StopObserver,
            Template::RestartAgent,
        ] {
            let p = plan(&DagSpec {
                nodes: t.nodes(),
                context: Context::default(),
            })
            .unwrap();
            assert_eq!(p.nodes.len(), t.steps().len());
            for (i, n) in p.nodes.iter().enumerate() {
                assert_eq!(n.spec.name, t.steps()[i].0);
                let want: Vec<usize> = if i == 0 { vec![] } else { vec![i - 1] };
                assert_eq!(n.upstreams, want);
            }
        }
    }
}
