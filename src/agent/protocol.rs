//! The agent's HTTP protocol: its paths, the idempotency header and the JSON
//! bodies, shared by the client and the reference server. The prose version
//! is `docs/agent-protocol.md`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// The header every mutating call carries: `"{subtask_id}:{run_time}"` when
/// taskd calls. The agent performs each (key, operation) pair once.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// Response header set to `true` when the body is the recorded result of an
/// earlier call with the same key, not a new performance.
pub const REPLAYED_HEADER: &str = "Idempotency-Replayed";

/// Longest idempotency key the agent accepts, in bytes.
pub const MAX_KEY_LEN: usize = 200;

/// The observer's SQL port when neither the start request nor the agent's
/// configuration names one.
pub const DEFAULT_OBSERVER_PORT: u16 = 2881;

/// Name of the observer process in statuses and logs.
pub const OBSERVER: &str = "observer";
/// Name of the pos proxy process.
pub const POS_PROXY: &str = "pos_proxy";
/// The agent's own processes, which stop-all and start-all act on.
pub const AGENT_PROCESSES: [&str; 2] = ["ocp_monagent", "ocp_mgragent"];

/// Paths of the protocol.
pub mod paths {
    pub const STATUS: &str = "/api/v1/status";
    pub const OBSERVER: &str = "/api/v1/observer";
    pub const OBSERVER_START: &str = "/api/v1/observer/start";
    pub const OBSERVER_STOP: &str = "/api/v1/observer/stop";
    pub const OBSERVER_ACTIVATE: &str = "/api/v1/observer/activate";
    pub const OBSERVER_DEACTIVATE: &str = "/api/v1/observer/deactivate";
    pub const POS_PROXY_RESTART: &str = "/api/v1/pos-proxy/restart";
    pub const AGENT_STOP_ALL: &str = "/api/v1/agent/stop-all";
    pub const AGENT_START_ALL: &str = "/api/v1/agent/start-all";
    pub const FAULTS: &str = "/api/v1/faults";
    pub const RECORDS: &str = "/api/v1/records";
}

/// Every operation of the protocol; faults and records name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    AgentStatus,
    ObserverStatus,
    ObserverStart,
    ObserverStop,
    ObserverActivate,
    ObserverDeactivate,
    PosProxyRestart,
    AgentStopAll,
    AgentStartAll,
}

impl Operation {
    pub const ALL: [Operation; 9] = [
        Operation::AgentStatus,
        Operation::ObserverStatus,
        Operation::ObserverStart,
        Operation::ObserverStop,
        Operation::ObserverActivate,
        Operation::ObserverDeactivate,
        Operation::PosProxyRestart,
        Operation::AgentStopAll,
        Operation::AgentStartAll,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::AgentStatus => "agent_status",
            Operation::ObserverStatus => "observer_status",
            Operation::ObserverStart => "observer_start",
            Operation::ObserverStop => "observer_stop",
            Operation::ObserverActivate => "observer_activate",
            Operation::ObserverDeactivate => "observer_deactivate",
            Operation::PosProxyRestart => "pos_proxy_restart",
            Operation::AgentStopAll => "agent_stop_all",
            Operation::AgentStartAll => "agent_start_all",
        }
    }

    /// The path the operation is served on (GET for reads, POST otherwise).
    pub fn path(self) -> &'static str {
        match self {
            Operation::AgentStatus => paths::STATUS,
            Operation::ObserverStatus => paths::OBSERVER,
            Operation::ObserverStart => paths::OBSERVER_START,
            Operation::ObserverStop => paths::OBSERVER_STOP,
            Operation::ObserverActivate => paths::OBSERVER_ACTIVATE,
            Operation::ObserverDeactivate => paths::OBSERVER_DEACTIVATE,
            Operation::PosProxyRestart => paths::POS_PROXY_RESTART,
            Operation::AgentStopAll => paths::AGENT_STOP_ALL,
            Operation::AgentStartAll => paths::AGENT_START_ALL,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Operation::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Operation::ALL.iter().map(|op| op.as_str()).collect();
                format!(
                    "unknown operation {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Checks an idempotency key: 1 to [`MAX_KEY_LEN`] visible ASCII characters.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err(format!("the {IDEMPOTENCY_KEY_HEADER} header is empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!(
            "the {IDEMPOTENCY_KEY_HEADER} header is longer than {MAX_KEY_LEN} bytes"
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "the {IDEMPOTENCY_KEY_HEADER} header must be visible ASCII without spaces"
        ));
    }
    Ok(())
}

/// Body of `POST /api/v1/observer/start`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartObserver {
    /// The SQL port the observer listens on; the agent's configured port
    /// (default 2881) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// Body of `POST /api/v1/observer/stop`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopObserver {
    /// Kill at once with SIGKILL instead of SIGTERM first.
    #[serde(default)]
    pub force: bool,
    /// Graceful stop: how long to wait after SIGTERM before SIGKILL; the
    /// agent's configured stop timeout when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Body of the mutating calls that take no parameters: empty, or `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    Running,
    Stopped,
}

/// One process the agent runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStatus {
    pub name: String,
    pub state: ProcessState,
    /// Set while running.
    pub pid: Option<u32>,
    /// When the running process was started.
    pub started_at: Option<DateTime<Utc>>,
    /// How the last run of the process ended, when the agent knows.
    pub last_exit: Option<String>,
}

impl ProcessStatus {
    pub fn is_running(&self) -> bool {
        self.state == ProcessState::Running
    }
}

/// The observer: its process, its SQL port and its server flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObserverStatus {
    pub state: ProcessState,
    pub pid: Option<u32>,
    /// IP the observer listens on and is probed on.
    pub ip: IpAddr,
    pub port: u16,
    /// Whether a TCP connection to ip:port succeeds now.
    pub listening: bool,
    /// The server flag set by activate (`ALTER SYSTEM START SERVER`) and
    /// cleared by deactivate or any stop; false whenever the process is not
    /// running.
    pub active: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub last_exit: Option<String>,
}

impl ObserverStatus {
    pub fn is_running(&self) -> bool {
        self.state == ProcessState::Running
    }
}

/// Facts about the agent process itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub version: String,
    pub pid: u32,
    pub listen: String,
    pub started_at: DateTime<Utc>,
}

/// Body of `GET /api/v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub agent: AgentInfo,
    pub observer: ObserverStatus,
    /// The pos proxy and the agent's own processes.
    pub processes: Vec<ProcessStatus>,
}

impl AgentStatus {
    /// The process of that name, if the agent runs one.
    pub fn process(&self, name: &str) -> Option<&ProcessStatus> {
        self.processes.iter().find(|p| p.name == name)
    }
}

/// Body of the stop-all and start-all answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessList {
    pub processes: Vec<ProcessStatus>,
}

/// Body of `POST /api/v1/faults`: the next `fail_next` performances of
/// `operation` answer 500 without doing anything; the next `stall_next` sleep
/// `stall_ms` before they go on. Replaces the operation's earlier fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub operation: Operation,
    #[serde(default)]
    pub fail_next: u32,
    #[serde(default)]
    pub stall_next: u32,
    #[serde(default)]
    pub stall_ms: u64,
    /// Error message of the injected failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl FaultSpec {
    /// A fault that fails the next `n` performances of `operation`.
    pub fn fail(operation: Operation, n: u32) -> FaultSpec {
        FaultSpec {
            operation,
            fail_next: n,
            stall_next: 0,
            stall_ms: 0,
            message: None,
        }
    }

    /// A fault that stalls the next `n` performances of `operation` by `ms`.
    pub fn stall(operation: Operation, n: u32, ms: u64) -> FaultSpec {
        FaultSpec {
            operation,
            fail_next: 0,
            stall_next: n,
            stall_ms: ms,
            message: None,
        }
    }
}

/// Body of the fault endpoints' answers: the faults still armed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultTable {
    pub faults: Vec<FaultSpec>,
}

/// One performed call: what it asked, what it answered, when it ran, and how
/// many calls with its key arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub key: String,
    pub operation: Operation,
    /// The request body, defaults filled in.
    pub request: serde_json::Value,
    /// The HTTP status of the answer.
    pub status: u16,
    /// The answer's body; replays return it unchanged.
    pub response: serde_json::Value,
    /// Calls with this key and operation that arrived, the first included.
    pub seen: u64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// Body of `GET /api/v1/records`, oldest performance first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Records {
    pub records: Vec<CallRecord>,
}

/// Body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_round_trip_by_name() {
        for op in Operation::ALL {
            assert_eq!(op.as_str().parse::<Operation>(), Ok(op));
            let json = serde_json::to_string(&op).expect("serialize");
            assert_eq!(json, format!("\"{}\"", op.as_str()));
        }
        assert!("reboot".parse::<Operation>().is_err());
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("12:3").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("a b").is_err());
        assert!(check_key(&"x".repeat(MAX_KEY_LEN + 1)).is_err());
    }

    #[test]
    fn requests_refuse_unknown_fields_and_fill_defaults() {
        let stop: StopObserver = serde_json::from_str("{}").expect("empty stop");
        assert_eq!(stop, StopObserver::default());
        assert!(serde_json::from_str::<StopObserver>(r#"{"forse": true}"#).is_err());
        let fault: FaultSpec =
            serde_json::from_str(r#"{"operation": "observer_stop", "fail_next": 2}"#)
                .expect("fault");
        assert_eq!(fault, FaultSpec::fail(Operation::ObserverStop, 2));
        assert!(serde_json::from_str::<FaultSpec>(r#"{"operation": "reboot"}"#).is_err());
    }
}
