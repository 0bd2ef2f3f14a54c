//! The engine protocol: submit a DAG, claim and run subtasks, finish runs
//! fenced in short transactions, recover lost runs, and the user actions
//! (retry, rollback, skip, cancel).

mod control;
mod finish;
pub mod history;
mod submit;
mod sweeper;
mod worker;

pub use control::{cancel_subtask, retry_subtask, retry_task, rollback_task, skip_subtask};
pub use finish::{finish_and_start, finish_batch, finish_batch_with, Finished, Outcome, Promotion};
pub use history::{HistoryConfig, Maintenance};
pub use submit::{submit, Submitted};
pub use sweeper::Sweeper;
pub use worker::{Started, Worker};

use crate::dag::DagError;
use crate::model::transitions::Refusal;
use crate::model::{SubtaskId, TaskId};
use std::time::Duration;

/// How the worker loops, the finisher and the sweeper behave.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Subtasks one worker runs at once.
    pub slots: usize,
    /// Claim poll interval when no notification arrives.
    pub poll_interval: Duration,
    pub heartbeat_interval: Duration,
    /// A worker silent this long is dead.
    pub dead_after: Duration,
    pub sweep_interval: Duration,
    /// On shutdown, how long running subtasks may take before hand-back.
    pub shutdown_grace: Duration,
    /// First automatic-retry backoff; doubles per attempt up to the cap.
    pub retry_backoff: Duration,
    pub retry_backoff_cap: Duration,
    /// The sweeper fails a run this long after its timeout passed (the
    /// worker normally stops it right at the timeout).
    pub timeout_grace: Duration,
    /// Most finished runs written in one transaction.
    pub finish_batch: usize,
    /// The history maintenance pass (rollups, retention).
    pub history: HistoryConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            slots: 32,
            poll_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(1),
            dead_after: Duration::from_secs(4),
            sweep_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(10),
            retry_backoff: Duration::from_secs(1),
            retry_backoff_cap: Duration::from_secs(60),
            timeout_grace: Duration::from_secs(2),
            finish_batch: 128,
            history: HistoryConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("invalid DAG: {0}")]
    Dag(#[from] DagError),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("task {0} does not exist")]
    TaskNotFound(TaskId),
    #[error("subtask {subtask} of task {task} does not exist")]
    SubtaskNotFound { task: TaskId, subtask: SubtaskId },
    /// The Idempotency-Key's index refused a second task, yet no task holds
    /// the key (it was deleted in between).
    #[error("no task holds idempotency key {0:?}")]
    KeyedTaskNotFound(String),
    #[error("{0}")]
    TargetBusy(Busy),
    /// A run's task ended without an outcome (it panicked or was aborted).
    #[error("a run's task ended without an outcome: {0}")]
    RunLost(#[from] tokio::task::JoinError),
}

/// A target another RUNNING task holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    /// The key refused, e.g. `server:7`.
    pub key: String,
    /// The task holding it, when it was still RUNNING as we looked.
    pub holder: Option<TaskId>,
}

impl crate::db::DbFault for Error {
    fn sqlx_error(&self) -> Option<&sqlx::Error> {
        match self {
            Error::Store(e) => crate::db::DbFault::sqlx_error(e),
            _ => None,
        }
    }
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.holder {
            Some(t) => write!(f, "{} is held by RUNNING task {t}", self.key),
            None => write!(f, "{} already has a RUNNING task", self.key),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(e.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when trying again may succeed: the connection or the server
    /// failed (or a serialization conflict), not the statement. False when
    /// PostgreSQL refused what was sent, which would fail again.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Store(crate::store::Error::Db(e)) => match e {
                sqlx::Error::Database(d) => {
                    let code = d.code();
                    let code = code.as_deref().unwrap_or("");
                    code.starts_with("08")
                        || code.starts_with("53")
                        || code.starts_with("57P")
                        || matches!(code, "40001" | "40P01" | "25006" | "55P03")
                }
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                _ => false,
            },
            _ => false,
        }
    }
}

/// A new worker id: host, pid and a random suffix, unique per process start.
pub fn new_worker_id() -> String {
    let host = host_name();
    format!(
        "{host}-{}-{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// This machine's host name ("localhost" when none is readable): the
/// API's advertised address on every interface and the prefix of worker ids.
pub fn host_name() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}
