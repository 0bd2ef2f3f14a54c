//! User actions on tasks and subtasks: each locks the task row, checks the
//! state machine, changes state and notifies, in one transaction. A refused
//! action changes nothing.

use super::{finish::after_change, submit::busy, Busy, Error, Result};
use crate::model::transitions::{self};
use crate::model::{SubtaskId, SubtaskStatus, TaskId, TaskOperation, TaskStatus};
use crate::store::{self, subtask::SubtaskRow, task::TaskRow, TaskConflict};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

async fn lock(tx: &mut PgConnection, id: TaskId) -> Result<TaskRow> {
    store::task::lock(tx, id)
        .await?
        .ok_or(Error::TaskNotFound(id))
}

async fn subtask_of(
    tx: &mut PgConnection,
    task: &TaskRow,
    subtask: SubtaskId,
) -> Result<SubtaskRow> {
    match store::subtask::get(&mut *tx, subtask.0).await? {
        Some(s) if s.task_id == task.id => Ok(s),
        _ => Err(Error::SubtaskNotFound {
            task: TaskId(task.id),
            subtask,
        }),
    }
}

/// Sets the task RUNNING again, taking its keys again (by trigger); a key
/// another RUNNING task holds refuses it (see [`named_holder`]).
async fn set_running(tx: &mut PgConnection, task: &mut TaskRow, op: TaskOperation) -> Result<()> {
    match store::task::set_state(tx, TaskId(task.id), TaskStatus::Running, op).await {
        Ok(()) => {
            task.status = TaskStatus::Running;
            task.operation = op;
            Ok(())
        }
        Err(e) if e.task_conflict() == Some(TaskConflict::TargetBusy) => {
            Err(Error::TargetBusy(Busy {
                key: task.target_key.clone().unwrap_or_default(),
                holder: None,
            }))
        }
        Err(e) => Err(e.into()),
    }
}

/// A refusal for a held key names the task that holds it; read once the
/// refused transaction is gone.
async fn named_holder<T>(pool: &PgPool, id: TaskId, r: Result<T>) -> Result<T> {
    match r {
        Err(Error::TargetBusy(b)) if b.holder.is_none() => {
            let keys = store::task::held_keys(pool, id).await?;
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            Err(busy(pool, &keys, Some(id)).await)
        }
        other => other,
    }
}

/// Fills the task's free slots (or settles it), wakes the workers if that
/// made subtasks READY, and commits.
async fn commit(mut tx: Transaction<'_, Postgres>, task: &mut TaskRow) -> Result<()> {
    let promoted = after_change(&mut tx, std::slice::from_mut(task)).await?;
    if promoted {
        store::notify_ready(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Retry a FAILED task: every FAILED subtask runs again (run_time + 1).
pub async fn retry_task(pool: &PgPool, id: TaskId) -> Result<()> {
    named_holder(pool, id, retry_task_in(pool, id).await).await
}

async fn retry_task_in(pool: &PgPool, id: TaskId) -> Result<()> {
    let mut tx = pool.begin().await?;
    let mut task = lock(&mut tx, id).await?;
    transitions::check_task_retry(task.status, task.operation)?;
    set_running(&mut tx, &mut task, TaskOperation::Retry).await?;
    store::subtask::requeue_failed(&mut tx, id, None).await?;
    commit(tx, &mut task).await
}

/// Roll a FAILED task back: undo every subtask that ran, in reverse
/// topological order.
pub async fn rollback_task(pool: &PgPool, id: TaskId) -> Result<()> {
    named_holder(pool, id, rollback_task_in(pool, id).await).await
}

async fn rollback_task_in(pool: &PgPool, id: TaskId) -> Result<()> {
    let mut tx = pool.begin().await?;
    let mut task = lock(&mut tx, id).await?;
    let prohibited = task.prohibit_rollback
        || task.context.0.prohibits_rollback()
        || (task.status == TaskStatus::Failed
            && store::subtask::rollback_prohibited(&mut tx, id).await?);
    transitions::check_task_rollback(task.status, task.operation, prohibited)?;
    set_running(&mut tx, &mut task, TaskOperation::Rollback).await?;
    // Queued for their turns; `commit` starts those the slots allow.
    store::subtask::start_rollback(&mut tx, id).await?;
    commit(tx, &mut task).await
}

/// Retry one FAILED subtask (not while rolling back).
pub async fn retry_subtask(pool: &PgPool, id: TaskId, subtask: SubtaskId) -> Result<SubtaskRow> {
    named_holder(pool, id, retry_subtask_in(pool, id, subtask).await).await
}

async fn retry_subtask_in(pool: &PgPool, id: TaskId, subtask: SubtaskId) -> Result<SubtaskRow> {
    let (subtask_id, subtask) = (subtask, subtask.0);
    let mut tx = pool.begin().await?;
    let mut task = lock(&mut tx, id).await?;
    let sub = subtask_of(&mut tx, &task, subtask_id).await?;
    transitions::check_subtask_retry(task.operation, sub.status)?;
    set_running(&mut tx, &mut task, TaskOperation::Retry).await?;
    store::subtask::requeue_failed(&mut tx, id, Some(subtask)).await?;
    commit(tx, &mut task).await?;
    store::subtask::get(pool, subtask)
        .await?
        .ok_or(Error::SubtaskNotFound {
            task: id,
            subtask: subtask_id,
        })
}

/// Skip one FAILED subtask: SUCCESSFUL/SKIP, or PENDING/ROLLBACK_SKIP while
/// rolling back, without running it.
pub async fn skip_subtask(pool: &PgPool, id: TaskId, subtask: SubtaskId) -> Result<()> {
    named_holder(pool, id, skip_subtask_in(pool, id, subtask).await).await
}

async fn skip_subtask_in(pool: &PgPool, id: TaskId, subtask: SubtaskId) -> Result<()> {
    let (subtask_id, subtask) = (subtask, subtask.0);
    let mut tx = pool.begin().await?;
    let mut task = lock(&mut tx, id).await?;
    let sub = subtask_of(&mut tx, &task, subtask_id).await?;
    let (status, op) = transitions::skip_outcome(task.operation, sub.status)?;
    let op_now = task.operation;
    set_running(&mut tx, &mut task, op_now).await?;
    store::subtask::skip(&mut tx, subtask, status, op).await?;
    if status == SubtaskStatus::Successful {
        store::subtask::decrement_downstreams(&mut tx, &[subtask]).await?;
    } else {
        store::subtask::rollback_upstreams(&mut tx, subtask).await?;
    }
    commit(tx, &mut task).await
}

/// Cancel one RUNNING subtask: it becomes CANCELING and its worker is told
/// to stop the action; the run then ends FAILED with operation CANCEL. A
/// READY subtask (not claimed yet, e.g. a retry in backoff) ends so at once.
pub async fn cancel_subtask(pool: &PgPool, id: TaskId, subtask: SubtaskId) -> Result<()> {
    let (subtask_id, subtask) = (subtask, subtask.0);
    let mut tx = pool.begin().await?;
    let mut task = lock(&mut tx, id).await?;
    let sub = subtask_of(&mut tx, &task, subtask_id).await?;
    transitions::check_subtask_cancel(sub.status)?;
    // The claim takes no task lock: a READY row may be claimed meanwhile,
    // then it is RUNNING and is cancelled as such.
    if sub.status == SubtaskStatus::Ready && store::subtask::cancel_ready(&mut tx, subtask).await? {
        return commit(tx, &mut task).await;
    }
    if store::subtask::mark_canceling(&mut tx, subtask)
        .await?
        .is_some()
    {
        store::notify_cancel(&mut tx, subtask).await?;
    }
    tx.commit().await?;
    Ok(())
}
