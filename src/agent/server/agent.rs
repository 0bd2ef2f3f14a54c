//! The agent itself: its state directory opened and served, its processes,
//! status reads and injected faults. Mutating calls are in `perform`.

use super::dirlock::DirLock;
use super::fence::Fences;
use super::request::ApiError;
use super::state::{adopt, read_state, write_atomically, AgentState};
use super::{lock, AgentConfig, Error, Result, PROBE_TIMEOUT, STATE_FILE};
use crate::agent::process::{self, Proc, Spec};
use crate::agent::protocol::{
    AgentInfo, AgentStatus, FaultSpec, FaultTable, ObserverStatus, Operation, ProcessStatus,
    AGENT_PROCESSES, OBSERVER, POS_PROXY,
};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub(super) struct Agent {
    pub(super) cfg: AgentConfig,
    pub(super) listen: SocketAddr,
    pub(super) observer_ip: IpAddr,
    pub(super) started_at: DateTime<Utc>,
    pub(super) state_path: PathBuf,
    pub(super) logs_dir: PathBuf,
    /// Held for the whole of each mutating performance (and its replay
    /// check), so performances never overlap.
    pub(super) ops: tokio::sync::Mutex<()>,
    /// Held while the state file is written: a fence is saved outside
    /// `ops`, and the newest state must be written last.
    pub(super) saving: tokio::sync::Mutex<()>,
    /// Short critical sections only; never held across an await.
    pub(super) state: Mutex<AgentState>,
    pub(super) faults: Mutex<BTreeMap<Operation, FaultSpec>>,
    /// Calls of a key that an injected fault failed, counted into `seen`
    /// when the key is finally performed.
    pub(super) failed_seen: Mutex<HashMap<(String, Operation), u64>>,
    pub(super) shutdown: CancellationToken,
}

/// An agent whose state directory is open, not yet serving.
pub(super) struct Opened {
    pub(super) agent: Arc<Agent>,
    pub(super) _lock: DirLock,
}

impl Opened {
    pub(super) async fn open(
        cfg: AgentConfig,
        listen: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<Opened> {
        let dir = cfg.state_dir.clone();
        let logs_dir = dir.join("logs");
        std::fs::create_dir_all(&logs_dir).map_err(|source| Error::StateDir {
            path: logs_dir.clone(),
            source,
        })?;
        let lock = DirLock::take_waiting(&dir).await?;
        let state_path = dir.join(STATE_FILE);
        let loaded = read_state(&state_path)?;
        let fresh = loaded.is_none();
        let state = match loaded {
            Some(file) => adopt(file),
            None => AgentState {
                observer_port: cfg.observer_port,
                observer_active: false,
                slots: BTreeMap::new(),
                calls: VecDeque::new(),
                fences: Fences::default(),
                current: None,
            },
        };
        let observer_ip = cfg.observer_ip.unwrap_or(if listen.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            listen.ip()
        });
        let agent = Arc::new(Agent {
            cfg,
            listen,
            observer_ip,
            started_at: Utc::now(),
            state_path,
            logs_dir,
            ops: tokio::sync::Mutex::new(()),
            saving: tokio::sync::Mutex::new(()),
            state: Mutex::new(state),
            faults: Mutex::new(BTreeMap::new()),
            failed_seen: Mutex::new(HashMap::new()),
            shutdown,
        });
        if fresh {
            // A new host: its pos proxy and agent processes run already.
            let mut names = vec![POS_PROXY];
            names.extend(AGENT_PROCESSES);
            for name in names {
                if let Err(e) = agent.start_standin(name) {
                    // Leave nothing running that no state file records.
                    agent.stop_everything().await;
                    return Err(e.into());
                }
            }
        }
        agent.persist().await?;
        tracing::info!(
            listen = %listen,
            state_dir = %agent.cfg.state_dir.display(),
            fresh,
            "agent state opened"
        );
        Ok(Opened { agent, _lock: lock })
    }
}

impl Agent {
    // -- state -------------------------------------------------------------

    pub(super) async fn persist(&self) -> Result<()> {
        let _saving = self.saving.lock().await;
        let file = lock(&self.state).to_file();
        let path = self.state_path.clone();
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| Error::WriteState {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        let target = path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&target, &bytes))
            .await
            .map_err(|e| Error::WriteState {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?
            .map_err(|source| Error::WriteState { path, source })
    }

    // -- processes ---------------------------------------------------------

    pub(super) fn log_path(&self, name: &str) -> PathBuf {
        self.logs_dir.join(format!("{name}.log"))
    }

    pub(super) fn standin_spec(&self, name: &str, port: u16) -> Spec {
        Spec {
            name: name.to_string(),
            program: self.cfg.standin_exe.clone(),
            args: vec![
                OsString::from("observer-standin"),
                OsString::from("--port"),
                OsString::from(port.to_string()),
                OsString::from("--bind"),
                OsString::from(self.observer_ip.to_string()),
                OsString::from("--name"),
                OsString::from(name),
            ],
            // Its log goes to a file: no colour codes.
            env: vec![("NO_COLOR".to_string(), "1".to_string())],
            log: self.log_path(name),
        }
    }

    pub(super) fn observer_spec(&self, port: u16) -> Spec {
        match &self.cfg.observer_cmd {
            None => self.standin_spec(OBSERVER, port),
            Some(cmd) => {
                let ip = self.observer_ip.to_string();
                let line = cmd
                    .replace("{port}", &port.to_string())
                    .replace("{ip}", &ip);
                Spec {
                    name: OBSERVER.to_string(),
                    program: PathBuf::from("/bin/sh"),
                    args: vec![OsString::from("-c"), OsString::from(line)],
                    env: vec![
                        ("TASKD_OBSERVER_PORT".to_string(), port.to_string()),
                        ("TASKD_OBSERVER_IP".to_string(), ip),
                    ],
                    log: self.log_path(OBSERVER),
                }
            }
        }
    }

    /// Starts a stand-in process in slot `name`.
    pub(super) fn start_standin(&self, name: &str) -> Result<ProcessStatus, process::Error> {
        let p = Proc::spawn(&self.standin_spec(name, 0))?;
        let mut st = lock(&self.state);
        let slot = st.slot(name);
        slot.proc = Some(p);
        slot.started_at = Some(Utc::now());
        Ok(slot.status(name))
    }

    /// Stops what runs in slot `name`, if anything.
    pub(super) async fn stop_slot(
        &self,
        name: &str,
        force: bool,
        grace: Duration,
    ) -> Result<(), process::Error> {
        let running = lock(&self.state).slot(name).running().cloned();
        let how = match running {
            Some(p) => {
                let stopped = p.stop(force, grace).await?;
                // An adopted process is not this agent's child: no status.
                stopped.exit.or_else(|| {
                    Some(if stopped.killed {
                        format!("pid {} killed by the agent with SIGKILL", p.pid)
                    } else {
                        format!("pid {} stopped by the agent with SIGTERM", p.pid)
                    })
                })
            }
            None => None,
        };
        let mut st = lock(&self.state);
        st.slot(name).stopped(how);
        if name == OBSERVER {
            st.observer_active = false;
        }
        Ok(())
    }

    /// On shutdown with `OnShutdown::Stop`: everything, best effort.
    pub(super) async fn stop_everything(&self) {
        let names: Vec<String> = lock(&self.state).slots.keys().cloned().collect();
        for name in names {
            if let Err(e) = self.stop_slot(&name, false, self.cfg.stop_timeout).await {
                tracing::error!(name, error = %e, "could not stop a process at shutdown");
            }
        }
    }

    // -- statuses ----------------------------------------------------------

    pub(super) async fn observer_status(&self) -> ObserverStatus {
        let (slot, port, active) = {
            let st = lock(&self.state);
            (
                st.slots.get(OBSERVER).cloned().unwrap_or_default(),
                st.observer_port,
                st.observer_active,
            )
        };
        let ps = slot.status(OBSERVER);
        let running = ps.is_running();
        let listening = running && self.probe(port).await;
        ObserverStatus {
            state: ps.state,
            pid: ps.pid,
            ip: self.observer_ip,
            port,
            listening,
            active: active && running,
            started_at: ps.started_at,
            last_exit: ps.last_exit,
        }
    }

    pub(super) async fn probe(&self, port: u16) -> bool {
        let addr = SocketAddr::new(self.observer_ip, port);
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
            Ok(Ok(_))
        )
    }

    pub(super) fn processes(&self) -> Vec<ProcessStatus> {
        let st = lock(&self.state);
        std::iter::once(POS_PROXY)
            .chain(AGENT_PROCESSES)
            .map(|name| st.status_of(name))
            .collect()
    }

    pub(super) fn own_processes(&self) -> Vec<ProcessStatus> {
        let st = lock(&self.state);
        AGENT_PROCESSES
            .iter()
            .map(|name| st.status_of(name))
            .collect()
    }

    pub(super) async fn agent_status(&self) -> AgentStatus {
        AgentStatus {
            agent: AgentInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
                pid: std::process::id(),
                listen: self.listen.to_string(),
                started_at: self.started_at,
            },
            observer: self.observer_status().await,
            processes: self.processes(),
        }
    }

    // -- faults ------------------------------------------------------------

    /// Takes one stall and one failure of `op`'s fault, if armed.
    pub(super) fn take_fault(&self, op: Operation) -> (Option<Duration>, Option<String>) {
        let mut faults = lock(&self.faults);
        let Some(f) = faults.get_mut(&op) else {
            return (None, None);
        };
        let stall = (f.stall_next > 0).then(|| {
            f.stall_next -= 1;
            Duration::from_millis(f.stall_ms)
        });
        let fail = (f.fail_next > 0).then(|| {
            f.fail_next -= 1;
            f.message
                .clone()
                .unwrap_or_else(|| "injected fault".to_string())
        });
        if f.stall_next == 0 && f.fail_next == 0 {
            faults.remove(&op);
        }
        (stall, fail)
    }

    /// Applies `op`'s armed fault: stalls, then fails if told to.
    pub(super) async fn apply_fault(&self, op: Operation) -> Result<(), ApiError> {
        let (stall, fail) = self.take_fault(op);
        if let Some(d) = stall {
            tracing::info!(operation = %op, ms = d.as_millis() as u64, "injected stall");
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = self.shutdown.cancelled() => return Err(ApiError::shutting_down()),
            }
        }
        if let Some(message) = fail {
            tracing::info!(operation = %op, "injected failure");
            return Err(ApiError::internal(format!("{message} ({op})")));
        }
        Ok(())
    }

    pub(super) fn fault_table(&self) -> FaultTable {
        FaultTable {
            faults: lock(&self.faults).values().cloned().collect(),
        }
    }
}
