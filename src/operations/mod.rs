//! OCP's operations, below the HTTP layer: each guards its target, builds
//! its template's context as OCP does and submits the task; an
//! Idempotency-Key seen before replays the first task. The HTTP layer only
//! parses, authorises and answers.
//!
//! Adding an operation: a type implementing [`Operation`] (its template, its
//! target key and a `prepare` that loads the target, checks its state and
//! returns the task's target columns and context), then [`submit`] does the
//! rest: the replay, the guards, the one-RUNNING-task-per-target rule and
//! the race between two requests with one key.
//!
//! Guards (a refused operation creates nothing):
//! - the cluster, server or host must exist and the server be in the
//!   cluster;
//! - start needs a STOPPED server; stop needs a RUNNING one (force also
//!   accepts ABNORMAL); restart needs a RUNNING or STOPPED one (force also
//!   accepts ABNORMAL): restarting a stopped server simply starts it, and a
//!   forced restart is how an abnormal one is recovered; servers in a
//!   transition (STARTING, STOPPING, RESTARTING) are refused;
//! - an agent restart is refused while the agent is RESTARTING;
//! - at most one RUNNING task per target key, enforced by the database; a
//!   zone or cluster task (see [`fleet`]) holds its cluster and each of its
//!   servers, an agent batch each of its hosts.
//!
//! An `Idempotency-Key` seen before returns the first task before any guard
//! runs; the same key on another operation or target is refused.

mod agent;
mod fleet;
mod server;

pub use agent::RestartAgent;
pub use fleet::{AgentBatch, ClusterRestart, ZoneOperation, MAX_BATCH_HOSTS};
pub use server::ServerOperation;

use crate::dag::templates::Template;
use crate::dag::{DagSpec, NodeSpec};
use crate::engine::{self, Submitted};
use crate::model::{Context, TaskId, TaskType};
use crate::store::inventory::ServerStatus;
use crate::store::{self, task::NewTask};
use async_trait::async_trait;
use sqlx::PgPool;

/// Subtasks of one task that may be READY or RUNNING at once.
pub const MAX_CONCURRENCY: i32 = 10;

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cluster {0} does not exist")]
    ClusterNotFound(i64),
    #[error("server {0} does not exist")]
    ServerNotFound(i64),
    #[error("server {server} is not in cluster {cluster}")]
    ServerNotInCluster { server: i64, cluster: i64 },
    #[error("host {0} does not exist")]
    HostNotFound(i64),
    /// The server's status refuses the operation; `wanted` says what it
    /// needs.
    #[error("server {server} is {status}; {wanted}")]
    ServerState {
        server: i64,
        status: ServerStatus,
        wanted: &'static str,
    },
    #[error("the agent of host {0} is already RESTARTING")]
    AgentRestarting(i64),
    #[error("zone {zone:?} is not in cluster {cluster}")]
    ZoneNotFound { cluster: i64, zone: String },
    /// A request field names nothing the operation can work on.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        value: serde_json::Value,
        message: String,
    },
    /// The Idempotency-Key was used for another operation or target.
    #[error("Idempotency-Key {0:?} was already used for another operation or target")]
    KeyReused(String),
    #[error(transparent)]
    Engine(#[from] engine::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(e.into())
    }
}

impl crate::db::DbFault for Error {
    fn sqlx_error(&self) -> Option<&sqlx::Error> {
        match self {
            Error::Store(e) => crate::db::DbFault::sqlx_error(e),
            Error::Engine(e) => crate::db::DbFault::sqlx_error(e),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who asks, and how the new task is tagged.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The caller's user name: the task's creator.
    pub creator: String,
    /// This server's address: the task's executor.
    pub executor: String,
    pub trace_id: String,
    pub idempotency_key: Option<String>,
}

/// The target columns, context and DAG of the task an operation creates.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub cluster_id: Option<i64>,
    pub host_id: Option<i64>,
    pub server_id: Option<i64>,
    pub context: Context,
    /// The DAG: the template's chain, or a multi-target DAG
    /// (`crate::dag::rollout`).
    pub nodes: Vec<NodeSpec>,
    /// Keys the task holds besides its target key (a zone's servers, its
    /// cluster, a batch's hosts): any RUNNING task holding one refuses it.
    pub holds: Vec<String>,
    /// Subtasks READY or RUNNING at once (an agent batch's parallelism).
    pub max_concurrency: i32,
}

/// One of OCP's operations on one target.
#[async_trait]
pub trait Operation: Send + Sync {
    /// The template whose steps the task runs.
    fn template(&self) -> Template;

    /// The task's name (the template's, unless the operation runs a
    /// multi-target DAG of its own).
    fn task_name(&self) -> &'static str {
        self.template().task_name()
    }

    /// The task's own target key, e.g. `server:7`; at most one RUNNING task
    /// holds a key.
    fn target_key(&self) -> String;

    /// The cluster a replay must be in (a CLUSTER_MANAGER of one cluster
    /// cannot replay another cluster's task through its own cluster's
    /// path), if the operation is scoped to one.
    fn cluster(&self) -> Option<i64> {
        None
    }

    /// Loads the target and checks its state: the task's target columns
    /// and context, or why the operation is refused.
    async fn prepare(&self, pool: &PgPool) -> Result<Prepared>;
}

/// Runs an operation: the first task of a repeated Idempotency-Key, or the
/// guards and a new task. Returns the task's id.
pub async fn submit(pool: &PgPool, origin: Origin, op: &dyn Operation) -> Result<TaskId> {
    let target_key = op.target_key();
    if let Some(first) = replay(pool, &origin, op, &target_key).await? {
        return Ok(first);
    }
    let prepared = op.prepare(pool).await?;
    let task = NewTask {
        name: op.task_name().to_string(),
        task_type: TaskType::Manual,
        creator: origin.creator,
        executor: Some(origin.executor),
        cluster_id: prepared.cluster_id,
        host_id: prepared.host_id,
        server_id: prepared.server_id,
        target_key: Some(target_key),
        holds: prepared.holds,
        context: prepared.context,
        prohibit_rollback: false,
        max_concurrency: prepared.max_concurrency,
        trace_id: origin.trace_id,
        idempotency_key: origin.idempotency_key,
    };
    submit_task(pool, task, prepared.nodes).await
}

/// The first task of a repeated Idempotency-Key, if it was for this
/// operation on this target (and in the operation's cluster).
async fn replay(
    pool: &PgPool,
    origin: &Origin,
    op: &dyn Operation,
    target_key: &str,
) -> Result<Option<TaskId>> {
    let Some(k) = &origin.idempotency_key else {
        return Ok(None);
    };
    match store::task::find_by_idempotency_key(pool, k).await? {
        None => Ok(None),
        Some(t) => {
            if t.name != op.task_name()
                || t.target_key.as_deref() != Some(target_key)
                || op.cluster().is_some_and(|c| t.cluster_id != Some(c))
            {
                return Err(Error::KeyReused(k.clone()));
            }
            Ok(Some(TaskId(t.id)))
        }
    }
}

/// Submits the DAG; a concurrent request with the same Idempotency-Key gets
/// the first task.
async fn submit_task(pool: &PgPool, task: NewTask, nodes: Vec<NodeSpec>) -> Result<TaskId> {
    let spec = DagSpec {
        nodes,
        context: task.context.clone(),
    };
    let submitted = match engine::submit(pool, &task, &spec).await {
        // A concurrent request with the same key may lose on the target's
        // index rather than on the key's: it is a replay all the same.
        Err(engine::Error::TargetBusy(busy)) => match &task.idempotency_key {
            Some(k) => match store::task::find_by_idempotency_key(pool, k).await? {
                Some(first) => Submitted::Existing(TaskId(first.id)),
                None => return Err(engine::Error::TargetBusy(busy).into()),
            },
            None => return Err(engine::Error::TargetBusy(busy).into()),
        },
        other => other?,
    };
    if let (Submitted::Existing(id), Some(k)) = (submitted, &task.idempotency_key) {
        // A concurrent request with the same key won the race.
        let first = store::task::get(pool, id).await?;
        if first.is_some_and(|t| t.name != task.name || t.target_key != task.target_key) {
            return Err(Error::KeyReused(k.clone()));
        }
    }
    Ok(submitted.id())
}
