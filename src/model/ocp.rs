//! OCP's task context as one struct: what an operation writes into a new
//! task's context (the restart sample's keys) and what the template actions
//! read back, so that no key is spelled in two places.

use super::Context;

/// The context keys, named once.
pub mod key {
    pub const CLUSTER_NAME: &str = "cluster_name";
    pub const CLUSTER_ID: &str = "cluster_id";
    pub const ZONE_NAME: &str = "zone_name";
    pub const SERVER_ID: &str = "server_id";
    pub const SERVER_IDS: &str = "server_ids";
    pub const HOST_ID: &str = "host_id";
    pub const FORCE: &str = "force";
    pub const PROHIBIT_ROLLBACK: &str = "prohibit_rollback";
    pub const AGENT_SERVICE_NAME: &str = "ocpagent_service_name";
    /// The agent's status before its restart (written by the prepare step).
    pub const FORMER_AGENT_STATUS: &str = "former_agent_status";
}

/// Which status of a level a context key holds: the one before the task
/// (`former`) or the one its update step writes (`target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Former,
    Target,
}

/// The inventory row a status key is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Server,
    Zone,
    Cluster,
}

/// The key of a level's former or target status, e.g.
/// `former_zone_status`.
pub fn status_key(phase: Phase, level: Level) -> String {
    let phase = match phase {
        Phase::Former => "former",
        Phase::Target => "target",
    };
    let level = match level {
        Level::Server => "server",
        Level::Zone => "zone",
        Level::Cluster => "cluster",
    };
    format!("{phase}_{level}_status")
}

/// The target of a server operation, as its context records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTargetKeys {
    pub cluster_id: i64,
    pub cluster_name: String,
    /// The cluster's status when the operation was asked.
    pub cluster_status: String,
    pub zone_name: String,
    /// The zone's status when the operation was asked.
    pub zone_status: String,
    pub server_id: i64,
}

/// What OCP's operations write into a new task's context and what its
/// actions read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OcpContext {
    /// Restart, start or stop of an OBServer.
    Server {
        target: ServerTargetKeys,
        force: bool,
    },
    /// Restart of a host's agent.
    Agent { host_id: i64 },
}

impl OcpContext {
    /// The task context OCP gives this operation.
    pub fn to_context(&self) -> Context {
        let mut c = Context::default();
        c.set(key::PROHIBIT_ROLLBACK, "false");
        match self {
            OcpContext::Server { target: t, force } => {
                c.set(key::CLUSTER_NAME, t.cluster_name.clone());
                c.set(key::CLUSTER_ID, t.cluster_id.to_string());
                c.set(key::AGENT_SERVICE_NAME, "agent");
                c.set(
                    status_key(Phase::Former, Level::Cluster),
                    t.cluster_status.clone(),
                );
                c.set(status_key(Phase::Target, Level::Cluster), "RUNNING");
                c.set(
                    status_key(Phase::Former, Level::Zone),
                    t.zone_status.clone(),
                );
                c.set(status_key(Phase::Target, Level::Zone), "RUNNING");
                c.set(key::ZONE_NAME, t.zone_name.clone());
                c.set(key::SERVER_ID, t.server_id.to_string());
                if *force {
                    c.set(key::FORCE, "true");
                }
                c.list_map
                    .insert(key::SERVER_IDS.into(), vec![t.server_id.to_string()]);
            }
            OcpContext::Agent { host_id } => {
                c.set(key::HOST_ID, host_id.to_string());
            }
        }
        c
    }

    /// The server a server operation's context names.
    pub fn server_id(c: &Context) -> Result<i64, String> {
        id(c, key::SERVER_ID)
    }

    /// The host an agent operation's context names.
    pub fn host_id(c: &Context) -> Result<i64, String> {
        id(c, key::HOST_ID)
    }

    /// True when the operation was forced.
    pub fn force(c: &Context) -> bool {
        c.get(key::FORCE) == Some("true")
    }
}

fn id(c: &Context, key: &str) -> Result<i64, String> {
    let value = c
        .get(key)
        .ok_or_else(|| format!("context has no {key:?}"))?;
    value
        .parse()
        .map_err(|_| format!("context key {key:?} is not an id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_an_operation_writes_its_actions_read() {
        let target = ServerTargetKeys {
            cluster_id: 3,
            cluster_name: "c".into(),
            cluster_status: "RUNNING".into(),
            zone_name: "z".into(),
            zone_status: "RUNNING".into(),
            server_id: 7,
        };
        let c = OcpContext::Server {
            target,
            force: true,
        }
        .to_context();
        assert_eq!(OcpContext::server_id(&c), Ok(7));
        assert!(OcpContext::force(&c));
        assert_eq!(c.list(key::SERVER_IDS), ["7"]);
        assert!(OcpContext::host_id(&c).is_err());
        let c = OcpContext::Agent { host_id: 9 }.to_context();
        assert_eq!(OcpContext::host_id(&c), Ok(9));
        assert!(!OcpContext::force(&c));
        assert_eq!(status_key(Phase::Former, Level::Zone), "former_zone_status");
    }
}
