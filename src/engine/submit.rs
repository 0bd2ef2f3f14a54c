//! Submitting a task: validate the DAG, then insert the task, its subtasks
//! and edges and mark the roots READY, all in one statement.

use super::{finish::input_of, Busy, Error, Result};
use crate::dag::{self, DagSpec};
use crate::model::{Context, TaskId};
use crate::store::{self, task::NewTask, TaskConflict};
use sqlx::PgPool;

/// What a submit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    Created(TaskId),
    /// The idempotency key was seen before: this is the first task.
    Existing(TaskId),
}

impl Submitted {
    pub fn id(self) -> TaskId {
        match self {
            Submitted::Created(id) | Submitted::Existing(id) => id,
        }
    }
}

/// Creates a task from any DAG. An invalid DAG is refused before anything
/// is written; a task holding a key (its target, or any of `holds`) that a
/// RUNNING task holds is refused by the database's unique index, so of
/// conflicting concurrent requests at most one creates a task.
pub async fn submit(pool: &PgPool, task: &NewTask, spec: &DagSpec) -> Result<Submitted> {
    let plan = dag::plan(spec)?;
    let task = &NewTask {
        context: task.context.clone().deduped(),
        ..task.clone()
    };
    if let Some(key) = &task.idempotency_key {
        if let Some(existing) = store::task::find_by_idempotency_key(pool, key).await? {
            return Ok(Submitted::Existing(TaskId(existing.id)));
        }
    }
    match insert(pool, task, &plan).await {
        Ok(id) => Ok(Submitted::Created(id)),
        Err(Error::Store(e)) => match e.task_conflict() {
            Some(TaskConflict::IdempotencyKey) => {
                let key = task.idempotency_key.as_deref().unwrap_or_default();
                let existing = store::task::find_by_idempotency_key(pool, key)
                    .await?
                    .ok_or_else(|| Error::KeyedTaskNotFound(key.to_string()))?;
                Ok(Submitted::Existing(TaskId(existing.id)))
            }
            Some(TaskConflict::TargetBusy) => Err(busy(pool, &task.held_keys(), None).await),
            _ => Err(Error::Store(e)),
        },
        Err(e) => Err(e),
    }
}

/// The refusal of a task wanting `keys`, naming the task that holds one
/// (read after the refusal: it may have settled since, then none is named).
pub(super) async fn busy(pool: &PgPool, keys: &[&str], except: Option<TaskId>) -> Error {
    match store::task::holder_of(pool, keys, except).await {
        Ok(Some(h)) => Error::TargetBusy(Busy {
            key: h.target_key,
            holder: Some(TaskId(h.task_id)),
        }),
        Ok(None) => Error::TargetBusy(Busy {
            key: keys.first().map(|k| k.to_string()).unwrap_or_default(),
            holder: None,
        }),
        Err(e) => e.into(),
    }
}

/// Inserts the task with its roots already READY (the first
/// `max_concurrency` of them, in series order, the rest waiting for a slot),
/// so a submit is one statement.
async fn insert(pool: &PgPool, task: &NewTask, plan: &dag::Plan) -> Result<TaskId> {
    let mut slots = task.max_concurrency.max(0) as usize;
    let ready: Vec<Option<Context>> = plan
        .nodes
        .iter()
        .map(|n| {
            (n.upstreams.is_empty() && slots > 0).then(|| {
                slots -= 1;
                input_of(task.context.clone(), n.parallel_idx)
            })
        })
        .collect();
    let id = store::task::insert(pool, task, plan, &ready).await?;
    tracing::info!(task_id = id.0, name = %task.name, trace_id = %task.trace_id, "task submitted");
    Ok(id)
}
