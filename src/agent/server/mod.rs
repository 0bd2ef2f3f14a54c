//! The reference agent (`taskd agent`): an axum server that runs a host's
//! processes for real (the observer, the pos proxy, the agent's own
//! processes), performs each idempotency key once, keeps its state in a JSON
//! file in its state directory, and can be told to fail or stall operations.
//!
//! Mutating calls run one at a time under one lock, in a task of their own so
//! a client that hangs up does not cut an operation in half. Status reads do
//! not take that lock. Keys `{subtask}:{run_time}` are fenced: once run_time
//! n of a subtask has reached the agent, the operation of an older run_time
//! in progress is stopped and that run's later calls are refused (410,
//! code "superseded"), a rule the state file keeps across restarts.
//!
//! - `state`: process slots and call records, the state file, adoption.
//! - `dirlock`: the state directory's lock.
//! - `fence`: refusing calls of attempts older than the newest seen.
//! - `agent`: opening and serving, processes, status reads, faults.
//! - `request`: parsed mutating calls and the agent's answers.
//! - `perform`: performing, recording and replaying mutating calls.
//! - `http`: routes and handlers.

mod agent;
mod dirlock;
mod fence;
mod http;
mod perform;
mod request;
mod state;

use super::process::{self, Proc};
use super::protocol::{self};
use super::AgentClient;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot use the state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the state directory {path} is in use by another agent")]
    Locked { path: PathBuf },
    #[error("the state file {path} is corrupt ({message}); move it away to start afresh")]
    CorruptState { path: PathBuf, message: String },
    #[error("cannot write the state file {path}: {source}")]
    WriteState {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Process(#[from] process::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the agent's HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error("the agent's server task ended abnormally: {0}")]
    Join(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Performed calls kept for replay and audit; the oldest go first.
pub const MAX_RECORDS: usize = 4096;

/// Version of the state file's layout.
const STATE_VERSION: u32 = 1;
const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "agent.lock";

/// How long a status read waits for the observer's port to answer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// Longest stall a fault may ask for.
const MAX_STALL: Duration = Duration::from_secs(600);

/// What happens to the processes when the agent shuts down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnShutdown {
    /// Leave them running; the next agent on the same state directory
    /// adopts them (a restarted agent must not take the database down).
    Leave,
    /// Stop them all (graceful, like a stop call) before exiting.
    Stop,
}

/// How a reference agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Holds `state.json`, `agent.lock` and `logs/<process>.log`.
    pub state_dir: PathBuf,
    /// Command line that runs the observer through `sh -c`, `{port}` and
    /// `{ip}` replaced (also in the environment as `TASKD_OBSERVER_PORT` and
    /// `TASKD_OBSERVER_IP`). None: the built-in stand-in.
    pub observer_cmd: Option<String>,
    /// The observer's port when a start request names none.
    pub observer_port: u16,
    /// IP the observer binds and is probed on. None: the listener's IP, or
    /// 127.0.0.1 when the listener is on an unspecified address.
    pub observer_ip: Option<IpAddr>,
    /// The taskd binary, run as `observer-standin` for the stand-ins.
    pub standin_exe: PathBuf,
    /// Graceful stop: time between SIGTERM and SIGKILL.
    pub stop_timeout: Duration,
    pub on_shutdown: OnShutdown,
}

impl AgentConfig {
    /// Defaults: stand-in observer on port 2881, this executable as the
    /// stand-in, 10 s stop timeout, processes left running at shutdown.
    pub fn new(state_dir: impl Into<PathBuf>) -> AgentConfig {
        AgentConfig {
            state_dir: state_dir.into(),
            observer_cmd: None,
            observer_port: protocol::DEFAULT_OBSERVER_PORT,
            observer_ip: None,
            standin_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("taskd")),
            stop_timeout: Duration::from_secs(10),
            on_shutdown: OnShutdown::Leave,
        }
    }
}

/// Runs an agent on `listener` until `shutdown` fires: opens (and locks)
/// the state directory, adopts the processes still alive, serves, then
/// waits for the operation in progress and applies `cfg.on_shutdown`.
pub async fn serve_agent(
    cfg: AgentConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    let local = listener.local_addr().map_err(Error::Serve)?;
    let opened = Opened::open(cfg, local, shutdown.clone()).await?;
    opened.run(listener).await
}

/// An agent started with [`spawn_agent`]; dropping it asks it to stop.
pub struct RunningAgent {
    addr: SocketAddr,
    state_dir: PathBuf,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

/// Binds `listen` (port 0 for any), opens the agent and serves it in a task
/// of its own: for tests and `taskd demo`. Errors opening the state
/// directory are returned here, not from the task.
pub async fn spawn_agent(cfg: AgentConfig, listen: SocketAddr) -> Result<RunningAgent> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(Error::Serve)?;
    let shutdown = CancellationToken::new();
    let state_dir = cfg.state_dir.clone();
    let opened = Opened::open(cfg, addr, shutdown.clone()).await?;
    let task = tokio::spawn(opened.run(listener));
    Ok(RunningAgent {
        addr,
        state_dir,
        shutdown,
        task: Some(task),
    })
}

impl RunningAgent {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ip:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// A client for this agent.
    pub fn client(&self, http: reqwest::Client) -> AgentClient {
        AgentClient::from_parts(http, self.url())
    }

    /// Stops the agent and waits until it has (see [`OnShutdown`]).
    pub async fn shutdown(mut self) -> Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await.map_err(|e| Error::Join(e.to_string()))?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Kills (SIGKILL, whole process group) every process the state file in
/// `state_dir` names that is still alive; returns how many. For cleaning up
/// after tests or a crashed demo; the agent must not be running.
pub fn kill_recorded_processes(state_dir: &Path) -> Result<usize> {
    let path = state_dir.join(STATE_FILE);
    let Some(file) = read_state(&path)? else {
        return Ok(0);
    };
    let mut killed = 0;
    for (name, rec) in &file.processes {
        let Some(pid) = rec.pid else { continue };
        if let Some(p) = Proc::adopt(name, pid, rec.start_ticks) {
            // adopt() returned Some only for a live process; one gone since
            // is no error.
            let _ = crate::agent::process::signal_group_or_process(
                pid,
                nix::sys::signal::Signal::SIGKILL,
            );
            tracing::info!(name = %p.name, pid, "killed a recorded process");
            killed += 1;
        }
    }
    Ok(killed)
}

/// Locks a mutex, carrying on with the data if a panicking thread left it
/// poisoned (every critical section leaves the data consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

use agent::Opened;
use state::read_state;
