//! The reference agent (`taskd agent`): an axum server that runs a host's
//! processes for real (the observer, the pos proxy, the agent's own
//! processes), performs each idempotency key once, keeps its state in a JSON
//! file in its state directory, and can be told to fail or stall operations.
//!
//! Mutating calls run one at a time under one lock, in a task of their own so
//! a client that hangs up does not cut an operation in half. Status reads do
//! not take that lock.

use super::process::{self, Proc, Spec};
use super::protocol::{
    self, check_key, paths, AgentInfo, AgentStatus, CallRecord, ErrorBody, FaultSpec, FaultTable,
    NoParams, ObserverStatus, Operation, ProcessList, ProcessState, ProcessStatus, Records,
    StartObserver, StopObserver, AGENT_PROCESSES, IDEMPOTENCY_KEY_HEADER, OBSERVER, POS_PROXY,
    REPLAYED_HEADER,
};
use super::AgentClient;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
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
            // SAFETY: plain system calls; adopt() returned Some only for a
            // live process with pid > 1, and its group is signalled only
            // when it leads one.
            unsafe {
                let pid = pid as libc::pid_t;
                let target = if libc::getpgid(pid) == pid { -pid } else { pid };
                libc::kill(target, libc::SIGKILL);
            }
            tracing::info!(name = %p.name, pid, "killed a recorded process");
            killed += 1;
        }
    }
    Ok(killed)
}

// ---------------------------------------------------------------------------
// State

/// One process slot: what runs there now, and how its last run ended.
#[derive(Debug, Clone, Default)]
struct Slot {
    proc: Option<Proc>,
    started_at: Option<DateTime<Utc>>,
    last_exit: Option<String>,
}

impl Slot {
    fn running(&self) -> Option<&Proc> {
        self.proc.as_ref().filter(|p| p.is_running())
    }

    fn status(&self, name: &str) -> ProcessStatus {
        match self.running() {
            Some(p) => ProcessStatus {
                name: name.to_string(),
                state: ProcessState::Running,
                pid: Some(p.pid),
                started_at: self.started_at,
                last_exit: self.last_exit.clone(),
            },
            None => ProcessStatus {
                name: name.to_string(),
                state: ProcessState::Stopped,
                pid: None,
                started_at: None,
                last_exit: self.ended_how(),
            },
        }
    }

    /// How the last run ended: the reaped status if this agent saw it.
    fn ended_how(&self) -> Option<String> {
        match &self.proc {
            Some(p) if !p.is_running() => p
                .exit_reason()
                .or_else(|| Some(format!("pid {} is gone", p.pid))),
            _ => self.last_exit.clone(),
        }
    }

    /// Records that the process stopped.
    fn stopped(&mut self, how: Option<String>) {
        self.last_exit = how.or_else(|| self.ended_how());
        self.proc = None;
        self.started_at = None;
    }
}

/// Everything the agent keeps, in memory.
struct AgentState {
    observer_port: u16,
    observer_active: bool,
    slots: BTreeMap<String, Slot>,
    calls: VecDeque<CallRecord>,
}

impl AgentState {
    fn slot(&mut self, name: &str) -> &mut Slot {
        self.slots.entry(name.to_string()).or_default()
    }

    fn status_of(&self, name: &str) -> ProcessStatus {
        match self.slots.get(name) {
            Some(s) => s.status(name),
            None => Slot::default().status(name),
        }
    }

    fn find_call(&mut self, key: &str, op: Operation) -> Option<&mut CallRecord> {
        self.calls
            .iter_mut()
            .rev()
            .find(|c| c.key == key && c.operation == op)
    }

    fn to_file(&self) -> StateFile {
        let processes = self
            .slots
            .iter()
            .map(|(name, slot)| {
                let rec = match slot.running() {
                    Some(p) => ProcRecord {
                        pid: Some(p.pid),
                        start_ticks: p.start_ticks,
                        started_at: slot.started_at,
                        last_exit: slot.last_exit.clone(),
                    },
                    None => ProcRecord {
                        pid: None,
                        start_ticks: None,
                        started_at: None,
                        last_exit: slot.ended_how(),
                    },
                };
                (name.clone(), rec)
            })
            .collect();
        StateFile {
            version: STATE_VERSION,
            observer_port: self.observer_port,
            observer_active: self.observer_active,
            processes,
            calls: self.calls.iter().cloned().collect(),
        }
    }
}

/// The state file's layout.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    observer_port: u16,
    observer_active: bool,
    processes: BTreeMap<String, ProcRecord>,
    calls: Vec<CallRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ProcRecord {
    pid: Option<u32>,
    start_ticks: Option<u64>,
    started_at: Option<DateTime<Utc>>,
    last_exit: Option<String>,
}

fn read_state(path: &Path) -> Result<Option<StateFile>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::StateDir {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let file: StateFile = serde_json::from_slice(&bytes).map_err(|e| Error::CorruptState {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if file.version != STATE_VERSION {
        return Err(Error::CorruptState {
            path: path.to_path_buf(),
            message: format!("layout version {} is not {STATE_VERSION}", file.version),
        });
    }
    Ok(Some(file))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, flushed, renamed over `path`, then the directory flushed.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Holds an exclusive `flock` on the state directory's lock file while
/// alive, so two agents never share one state directory.
struct DirLock {
    _file: std::fs::File,
}

/// How long a busy lock is retried before the directory counts as in use:
/// a child being spawned by another thread of this process holds a copy of
/// the lock's descriptor from fork until exec, so a lock just released by an
/// agent in this process may look held for a moment.
const LOCK_WAIT: Duration = Duration::from_secs(2);

impl DirLock {
    /// Takes the lock, retrying a busy one for up to [`LOCK_WAIT`].
    async fn take_waiting(dir: &Path) -> Result<DirLock> {
        let end = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            match DirLock::take(dir) {
                Err(Error::Locked { .. }) if tokio::time::Instant::now() < end => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }

    fn take(dir: &Path) -> Result<DirLock> {
        use std::os::fd::AsRawFd;
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::StateDir {
                path: path.clone(),
                source,
            })?;
        // SAFETY: flock on a descriptor this function owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::Locked {
                    path: dir.to_path_buf(),
                });
            }
            return Err(Error::StateDir { path, source: e });
        }
        Ok(DirLock { _file: file })
    }
}

// ---------------------------------------------------------------------------
// The agent

struct Agent {
    cfg: AgentConfig,
    listen: SocketAddr,
    observer_ip: IpAddr,
    started_at: DateTime<Utc>,
    state_path: PathBuf,
    logs_dir: PathBuf,
    /// Held for the whole of each mutating performance (and its replay
    /// check), so performances never overlap.
    ops: tokio::sync::Mutex<()>,
    /// Short critical sections only; never held across an await.
    state: Mutex<AgentState>,
    faults: Mutex<BTreeMap<Operation, FaultSpec>>,
    /// Calls of a key that an injected fault failed, counted into `seen`
    /// when the key is finally performed.
    failed_seen: Mutex<HashMap<(String, Operation), u64>>,
    shutdown: CancellationToken,
}

/// An agent whose state directory is open, not yet serving.
struct Opened {
    agent: Arc<Agent>,
    _lock: DirLock,
}

/// Locks a mutex, carrying on with the data if a panicking thread left it
/// poisoned (every critical section leaves the data consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Opened {
    async fn open(
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

    async fn run(self, listener: TcpListener) -> Result<()> {
        let agent = self.agent.clone();
        let app = router(agent.clone());
        let stop = agent.shutdown.clone();
        tracing::info!(listen = %agent.listen, "agent serving");
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        // No call starts from here on; wait for the one in progress.
        let _ops = agent.ops.lock().await;
        if agent.cfg.on_shutdown == OnShutdown::Stop {
            agent.stop_everything().await;
        }
        let saved = agent.persist().await;
        tracing::info!(listen = %agent.listen, "agent stopped");
        served.map_err(Error::Serve)?;
        saved
    }
}

/// Rebuilds the in-memory state from the file, adopting the processes that
/// still run and marking the others stopped.
fn adopt(file: StateFile) -> AgentState {
    let mut slots = BTreeMap::new();
    for (name, rec) in file.processes {
        let slot = match rec.pid {
            Some(pid) => match Proc::adopt(&name, pid, rec.start_ticks) {
                Some(p) => {
                    tracing::info!(name, pid, "adopted a running process");
                    Slot {
                        proc: Some(p),
                        started_at: rec.started_at,
                        last_exit: rec.last_exit,
                    }
                }
                None => {
                    tracing::info!(name, pid, "a recorded process is gone");
                    Slot {
                        proc: None,
                        started_at: None,
                        last_exit: Some(format!("pid {pid} was gone when the agent started")),
                    }
                }
            },
            None => Slot {
                proc: None,
                started_at: None,
                last_exit: rec.last_exit,
            },
        };
        slots.insert(name, slot);
    }
    let mut calls: VecDeque<CallRecord> = file.calls.into();
    while calls.len() > MAX_RECORDS {
        calls.pop_front();
    }
    AgentState {
        observer_port: file.observer_port,
        observer_active: file.observer_active,
        slots,
        calls,
    }
}

/// An operation's answer (or refusal) before it is recorded.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    fn shutting_down() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is shutting down",
        )
    }
}

impl From<process::Error> for ApiError {
    fn from(e: process::Error) -> Self {
        ApiError::internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// The answer to a mutating call: new, or the replay of a recorded one.
struct Reply {
    status: StatusCode,
    body: serde_json::Value,
    replayed: bool,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body)).into_response();
        resp.headers_mut().insert(
            REPLAYED_HEADER,
            HeaderValue::from_static(if self.replayed { "true" } else { "false" }),
        );
        resp
    }
}

/// A parsed mutating request.
#[derive(Debug, Clone)]
enum Request {
    ObserverStart(StartObserver),
    ObserverStop(StopObserver),
    ObserverActivate,
    ObserverDeactivate,
    PosProxyRestart,
    AgentStopAll,
    AgentStartAll,
}

impl Request {
    /// Parses the body of a mutating call of `op`: empty means `{}`.
    fn parse(op: Operation, body: &[u8]) -> Result<Request, ApiError> {
        fn json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
            let body = if body.iter().all(u8::is_ascii_whitespace) {
                b"{}".as_slice()
            } else {
                body
            };
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("bad request body: {e}")))
        }
        let req = match op {
            Operation::ObserverStart => {
                let r: StartObserver = json(body)?;
                if r.port == Some(0) {
                    return Err(ApiError::bad_request("port must be between 1 and 65535"));
                }
                Request::ObserverStart(r)
            }
            Operation::ObserverStop => Request::ObserverStop(json(body)?),
            other => {
                json::<NoParams>(body)?;
                match other {
                    Operation::ObserverActivate => Request::ObserverActivate,
                    Operation::ObserverDeactivate => Request::ObserverDeactivate,
                    Operation::PosProxyRestart => Request::PosProxyRestart,
                    Operation::AgentStopAll => Request::AgentStopAll,
                    Operation::AgentStartAll => Request::AgentStartAll,
                    read => {
                        return Err(ApiError::bad_request(format!(
                            "{read} is not a mutating operation"
                        )))
                    }
                }
            }
        };
        Ok(req)
    }

    fn operation(&self) -> Operation {
        match self {
            Request::ObserverStart(_) => Operation::ObserverStart,
            Request::ObserverStop(_) => Operation::ObserverStop,
            Request::ObserverActivate => Operation::ObserverActivate,
            Request::ObserverDeactivate => Operation::ObserverDeactivate,
            Request::PosProxyRestart => Operation::PosProxyRestart,
            Request::AgentStopAll => Operation::AgentStopAll,
            Request::AgentStartAll => Operation::AgentStartAll,
        }
    }

    /// Fills in the agent's defaults, so the record says what was done and
    /// `{}` is the same request as `{"port": <default>}`.
    fn fill_defaults(&mut self, cfg: &AgentConfig) {
        match self {
            Request::ObserverStart(r) => {
                r.port.get_or_insert(cfg.observer_port);
            }
            Request::ObserverStop(r) => {
                let ms = u64::try_from(cfg.stop_timeout.as_millis()).unwrap_or(u64::MAX);
                r.timeout_ms.get_or_insert(ms);
            }
            _ => {}
        }
    }

    /// The request as recorded (after [`Request::fill_defaults`]).
    fn canonical(&self) -> serde_json::Value {
        let v = match self {
            Request::ObserverStart(r) => serde_json::to_value(r),
            Request::ObserverStop(r) => serde_json::to_value(r),
            _ => serde_json::to_value(NoParams {}),
        };
        v.unwrap_or(serde_json::Value::Null)
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(v)
        .map_err(|e| ApiError::internal(format!("cannot encode the answer: {e}")))
}

impl Agent {
    // -- state -------------------------------------------------------------

    async fn persist(&self) -> Result<()> {
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

    fn log_path(&self, name: &str) -> PathBuf {
        self.logs_dir.join(format!("{name}.log"))
    }

    fn standin_spec(&self, name: &str, port: u16) -> Spec {
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

    fn observer_spec(&self, port: u16) -> Spec {
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
    fn start_standin(&self, name: &str) -> Result<ProcessStatus, process::Error> {
        let p = Proc::spawn(&self.standin_spec(name, 0))?;
        let mut st = lock(&self.state);
        let slot = st.slot(name);
        slot.proc = Some(p);
        slot.started_at = Some(Utc::now());
        Ok(slot.status(name))
    }

    /// Stops what runs in slot `name`, if anything.
    async fn stop_slot(
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

    /// On shutdown with [`OnShutdown::Stop`]: everything, best effort.
    async fn stop_everything(&self) {
        let names: Vec<String> = lock(&self.state).slots.keys().cloned().collect();
        for name in names {
            if let Err(e) = self.stop_slot(&name, false, self.cfg.stop_timeout).await {
                tracing::error!(name, error = %e, "could not stop a process at shutdown");
            }
        }
    }

    // -- statuses ----------------------------------------------------------

    async fn observer_status(&self) -> ObserverStatus {
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

    async fn probe(&self, port: u16) -> bool {
        let addr = SocketAddr::new(self.observer_ip, port);
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
            Ok(Ok(_))
        )
    }

    fn processes(&self) -> Vec<ProcessStatus> {
        let st = lock(&self.state);
        std::iter::once(POS_PROXY)
            .chain(AGENT_PROCESSES)
            .map(|name| st.status_of(name))
            .collect()
    }

    fn own_processes(&self) -> Vec<ProcessStatus> {
        let st = lock(&self.state);
        AGENT_PROCESSES
            .iter()
            .map(|name| st.status_of(name))
            .collect()
    }

    async fn agent_status(&self) -> AgentStatus {
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
    fn take_fault(&self, op: Operation) -> (Option<Duration>, Option<String>) {
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
    async fn apply_fault(&self, op: Operation) -> Result<(), ApiError> {
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

    fn fault_table(&self) -> FaultTable {
        FaultTable {
            faults: lock(&self.faults).values().cloned().collect(),
        }
    }

    // -- mutating calls ----------------------------------------------------

    /// Performs `req` under `key` once: a repeat returns the recorded answer.
    async fn perform(self: Arc<Self>, key: String, req: Request) -> Reply {
        let op = req.operation();
        let request = req.canonical();
        let _ops = self.ops.lock().await;
        if self.shutdown.is_cancelled() {
            return error_reply(ApiError::shutting_down());
        }
        let replay = {
            let mut st = lock(&self.state);
            st.find_call(&key, op).map(|rec| {
                if rec.request != request {
                    Err(ApiError::conflict(format!(
                        "idempotency key {key:?} was used for a different {op} request: {}",
                        rec.request
                    )))
                } else {
                    rec.seen += 1;
                    Ok(Reply {
                        status: StatusCode::from_u16(rec.status)
                            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                        body: rec.response.clone(),
                        replayed: true,
                    })
                }
            })
        };
        match replay {
            Some(Err(e)) => return error_reply(e),
            Some(Ok(reply)) => {
                tracing::info!(key, operation = %op, "replayed a recorded call");
                if let Err(e) = self.persist().await {
                    tracing::error!(error = %e, "could not save the replay count");
                }
                return reply;
            }
            None => {}
        }
        let started_at = Utc::now();
        if let Err(e) = self.apply_fault(op).await {
            if e.status != StatusCode::SERVICE_UNAVAILABLE {
                *lock(&self.failed_seen).entry((key, op)).or_default() += 1;
            }
            return error_reply(e);
        }
        tracing::info!(key, operation = %op, "performing");
        let outcome = self.execute(&req).await;
        let finished_at = Utc::now();
        let (status, body) = match outcome {
            Ok(v) => (StatusCode::OK, v),
            Err(e) => {
                tracing::warn!(key, operation = %op, error = %e.message, "operation failed");
                (e.status, error_body(&e.message))
            }
        };
        let earlier = lock(&self.failed_seen)
            .remove(&(key.clone(), op))
            .unwrap_or(0);
        {
            let mut st = lock(&self.state);
            st.calls.push_back(CallRecord {
                key,
                operation: op,
                request,
                status: status.as_u16(),
                response: body.clone(),
                seen: earlier + 1,
                started_at,
                finished_at,
            });
            while st.calls.len() > MAX_RECORDS {
                st.calls.pop_front();
            }
        }
        if let Err(e) = self.persist().await {
            tracing::error!(error = %e, "performed a call but could not save the state");
            return error_reply(ApiError::internal(format!(
                "the operation was performed, but {e}"
            )));
        }
        Reply {
            status,
            body,
            replayed: false,
        }
    }

    async fn execute(&self, req: &Request) -> Result<serde_json::Value, ApiError> {
        match req {
            Request::ObserverStart(r) => {
                let port = r.port.unwrap_or(self.cfg.observer_port);
                self.start_observer(port).await?;
                to_json(&self.observer_status().await)
            }
            Request::ObserverStop(r) => {
                let grace = r
                    .timeout_ms
                    .map_or(self.cfg.stop_timeout, Duration::from_millis);
                self.stop_slot(OBSERVER, r.force, grace).await?;
                to_json(&self.observer_status().await)
            }
            Request::ObserverActivate => {
                let status = self.observer_status().await;
                if !status.is_running() {
                    return Err(ApiError::conflict("the observer is not running"));
                }
                if !status.listening {
                    return Err(ApiError::conflict(format!(
                        "the observer (pid {}) does not answer on {}:{} yet",
                        status.pid.unwrap_or_default(),
                        status.ip,
                        status.port
                    )));
                }
                lock(&self.state).observer_active = true;
                to_json(&self.observer_status().await)
            }
            Request::ObserverDeactivate => {
                lock(&self.state).observer_active = false;
                to_json(&self.observer_status().await)
            }
            Request::PosProxyRestart => {
                self.stop_slot(POS_PROXY, false, self.cfg.stop_timeout)
                    .await?;
                to_json(&self.start_standin(POS_PROXY)?)
            }
            Request::AgentStopAll => {
                for name in AGENT_PROCESSES {
                    self.stop_slot(name, false, self.cfg.stop_timeout).await?;
                }
                to_json(&ProcessList {
                    processes: self.own_processes(),
                })
            }
            Request::AgentStartAll => {
                for name in AGENT_PROCESSES {
                    let running = lock(&self.state).slot(name).running().is_some();
                    if !running {
                        self.start_standin(name)?;
                    }
                }
                to_json(&ProcessList {
                    processes: self.own_processes(),
                })
            }
        }
    }

    async fn start_observer(&self, port: u16) -> Result<(), ApiError> {
        let (running, current_port) = {
            let mut st = lock(&self.state);
            let current = st.observer_port;
            (st.slot(OBSERVER).running().map(|p| p.pid), current)
        };
        if let Some(pid) = running {
            if current_port == port {
                return Ok(());
            }
            return Err(ApiError::conflict(format!(
                "the observer already runs (pid {pid}) on port {current_port}, not {port}"
            )));
        }
        let p = Proc::spawn(&self.observer_spec(port))?;
        let mut st = lock(&self.state);
        st.observer_port = port;
        st.observer_active = false;
        let slot = st.slot(OBSERVER);
        slot.proc = Some(p);
        slot.started_at = Some(Utc::now());
        slot.last_exit = None;
        Ok(())
    }
}

fn error_body(message: &str) -> serde_json::Value {
    serde_json::json!({ "error": message })
}

fn error_reply(e: ApiError) -> Reply {
    Reply {
        status: e.status,
        body: error_body(&e.message),
        replayed: false,
    }
}

// ---------------------------------------------------------------------------
// HTTP

type Shared = Arc<Agent>;

fn router(agent: Shared) -> Router {
    Router::new()
        .route(paths::STATUS, get(agent_status))
        .route(paths::OBSERVER, get(observer_status))
        .route(paths::OBSERVER_START, mutating(Operation::ObserverStart))
        .route(paths::OBSERVER_STOP, mutating(Operation::ObserverStop))
        .route(
            paths::OBSERVER_ACTIVATE,
            mutating(Operation::ObserverActivate),
        )
        .route(
            paths::OBSERVER_DEACTIVATE,
            mutating(Operation::ObserverDeactivate),
        )
        .route(
            paths::POS_PROXY_RESTART,
            mutating(Operation::PosProxyRestart),
        )
        .route(paths::AGENT_STOP_ALL, mutating(Operation::AgentStopAll))
        .route(paths::AGENT_START_ALL, mutating(Operation::AgentStartAll))
        .route(
            paths::FAULTS,
            get(list_faults).post(set_fault).delete(clear_faults),
        )
        .route(paths::RECORDS, get(records))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .with_state(agent)
}

fn mutating(op: Operation) -> MethodRouter<Shared> {
    post(
        move |State(agent): State<Shared>, headers: HeaderMap, body: Bytes| async move {
            handle_mutating(agent, op, headers, body).await
        },
    )
}

async fn handle_mutating(
    agent: Shared,
    op: Operation,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = match headers.get(IDEMPOTENCY_KEY_HEADER) {
        None => {
            return ApiError::bad_request(format!("{op} needs an {IDEMPOTENCY_KEY_HEADER} header"))
                .into_response()
        }
        Some(v) => match v.to_str() {
            Ok(k) => k.to_string(),
            Err(_) => {
                return ApiError::bad_request(format!(
                    "the {IDEMPOTENCY_KEY_HEADER} header must be visible ASCII"
                ))
                .into_response()
            }
        },
    };
    if let Err(m) = check_key(&key) {
        return ApiError::bad_request(m).into_response();
    }
    let mut req = match Request::parse(op, &body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    req.fill_defaults(&agent.cfg);
    // A task of its own: the operation completes (and is recorded) even if
    // the caller hangs up meanwhile.
    match tokio::spawn(agent.perform(key, req)).await {
        Ok(reply) => reply.into_response(),
        Err(e) => ApiError::internal(format!("{op} failed: {e}")).into_response(),
    }
}

async fn agent_status(State(agent): State<Shared>) -> Response {
    if let Err(e) = agent.apply_fault(Operation::AgentStatus).await {
        return e.into_response();
    }
    Json(agent.agent_status().await).into_response()
}

async fn observer_status(State(agent): State<Shared>) -> Response {
    if let Err(e) = agent.apply_fault(Operation::ObserverStatus).await {
        return e.into_response();
    }
    Json(agent.observer_status().await).into_response()
}

async fn list_faults(State(agent): State<Shared>) -> Json<FaultTable> {
    Json(agent.fault_table())
}

async fn set_fault(State(agent): State<Shared>, body: Bytes) -> Response {
    let spec: FaultSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return ApiError::bad_request(format!("bad fault: {e}")).into_response(),
    };
    if spec.stall_next > 0 && Duration::from_millis(spec.stall_ms) > MAX_STALL {
        return ApiError::bad_request(format!(
            "stall_ms may be at most {} ms",
            MAX_STALL.as_millis()
        ))
        .into_response();
    }
    {
        let mut faults = lock(&agent.faults);
        if spec.fail_next == 0 && spec.stall_next == 0 {
            faults.remove(&spec.operation);
        } else {
            tracing::info!(?spec, "fault armed");
            faults.insert(spec.operation, spec);
        }
    }
    Json(agent.fault_table()).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperationQuery {
    operation: Option<String>,
}

fn parse_op(q: &Option<String>) -> Result<Option<Operation>, ApiError> {
    q.as_deref()
        .map(str::parse)
        .transpose()
        .map_err(ApiError::bad_request)
}

async fn clear_faults(
    State(agent): State<Shared>,
    query: Result<Query<OperationQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return ApiError::bad_request(e.body_text()).into_response(),
    };
    match parse_op(&q.operation) {
        Err(e) => return e.into_response(),
        Ok(Some(op)) => {
            lock(&agent.faults).remove(&op);
        }
        Ok(None) => lock(&agent.faults).clear(),
    }
    Json(agent.fault_table()).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordsQuery {
    key: Option<String>,
    operation: Option<String>,
}

async fn records(
    State(agent): State<Shared>,
    query: Result<Query<RecordsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return ApiError::bad_request(e.body_text()).into_response(),
    };
    let op = match parse_op(&q.operation) {
        Ok(op) => op,
        Err(e) => return e.into_response(),
    };
    let records = lock(&agent.state)
        .calls
        .iter()
        .filter(|c| q.key.as_deref().is_none_or(|k| c.key == k))
        .filter(|c| op.is_none_or(|op| c.operation == op))
        .cloned()
        .collect();
    Json(Records { records }).into_response()
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("an agent handler panicked");
    ApiError::internal("internal error").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_strictly() {
        assert!(matches!(
            Request::parse(Operation::ObserverStop, b""),
            Ok(Request::ObserverStop(StopObserver {
                force: false,
                timeout_ms: None
            }))
        ));
        assert!(Request::parse(Operation::ObserverStop, b"{nope").is_err());
        assert!(Request::parse(Operation::ObserverActivate, br#"{"x":1}"#).is_err());
        assert!(Request::parse(Operation::ObserverStart, br#"{"port":0}"#).is_err());
        assert!(Request::parse(Operation::AgentStatus, b"").is_err());
        let cfg = AgentConfig::new("/nonexistent");
        let canonical = |op, body: &[u8]| {
            Request::parse(op, body).map(|mut r| {
                r.fill_defaults(&cfg);
                r.canonical()
            })
        };
        let stop = canonical(Operation::ObserverStop, b"{}").ok();
        assert_eq!(
            stop,
            canonical(
                Operation::ObserverStop,
                br#"{"force":false,"timeout_ms":10000}"#
            )
            .ok()
        );
        assert_eq!(
            canonical(Operation::ObserverStart, b"").ok(),
            canonical(Operation::ObserverStart, br#"{"port":2881}"#).ok()
        );
    }

    #[test]
    fn state_files_are_written_atomically_and_checked() {
        let dir = std::env::temp_dir().join(format!(
            "taskd-agent-unit-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join(STATE_FILE);
        assert!(matches!(read_state(&path), Ok(None)));
        write_atomically(&path, b"{not json").expect("write");
        assert!(matches!(read_state(&path), Err(Error::CorruptState { .. })));
        let file = StateFile {
            version: STATE_VERSION,
            observer_port: 2881,
            observer_active: true,
            processes: BTreeMap::new(),
            calls: vec![],
        };
        let bytes = serde_json::to_vec(&file).expect("encode");
        write_atomically(&path, &bytes).expect("write");
        let back = read_state(&path).expect("read").expect("present");
        assert!(back.observer_active);
        assert!(!path.with_extension("json.tmp").exists());
        let held = DirLock::take(&dir).expect("first lock");
        assert!(matches!(DirLock::take(&dir), Err(Error::Locked { .. })));
        drop(held);
        assert!(DirLock::take(&dir).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
