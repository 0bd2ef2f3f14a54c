//! Task management: list and read task instances in OCP's JSON shape, retry
//! and roll back tasks, read subtask logs, and retry, skip or cancel
//! subtasks.

use super::envelope::{EmptyEnvelope, Envelope, ErrorEnvelope, NoData, Paged, Success};
use super::error::{code, Error, Result};
use super::extract::{ApiPath, ApiQuery};
use super::AppState;
use crate::auth::{Permission, RequireExt};
use crate::engine;
use crate::model::{SubtaskId, TaskId};
use crate::store::{self, subtask::SubtaskRow};
use axum::extract::State;
use sqlx::PgPool;
use utoipa_axum::{router::OpenApiRouter, routes};

mod params;
mod views;

pub(crate) use params::page_params;
use params::{filter_params, sort_params};
pub use params::{LogQuery, SubtaskPath, TaskListQuery, TaskPath};
pub(crate) use views::{load_task, render_tasks};
use views::{task_not_found, Edges};
pub use views::{ClusterRef, LogView, SubtaskView, TaskView};

/// Largest page of any list.
pub const MAX_PAGE_SIZE: i64 = 2000;
/// Page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: i64 = 10;

/// Task reads need TASK_VIEWER, task actions TASK_MANAGER (or ADMIN).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    let read = Permission::TaskRead;
    let manage = Permission::TaskManage;
    OpenApiRouter::new()
        .routes(routes!(list_tasks).require(read))
        .routes(routes!(get_task).require(read))
        .routes(routes!(retry_task).require(manage))
        .routes(routes!(rollback_task).require(manage))
        .routes(routes!(subtask_log).require(read))
        .routes(routes!(retry_subtask).require(manage))
        .routes(routes!(skip_subtask).require(manage))
        .routes(routes!(cancel_subtask).require(manage))
}

// ---------------------------------------------------------------- handlers

/// List task instances.
#[utoipa::path(
    get,
    path = "/api/v2/tasks/instances",
    tag = "tasks",
    params(TaskListQuery),
    responses(
        (status = 200, description = "One page of tasks, with their subtasks. `totalElements` is exact up to 10000 matching tasks; past that it is the planner's estimate and `totalElementsEstimated` is true", body = Envelope<Paged<TaskView>>),
        (status = 400, description = "A bad filter, page, size or sort (the error names it)", body = ErrorEnvelope),
    )
)]
pub async fn list_tasks(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TaskListQuery>,
) -> Result<Success<Paged<TaskView>>> {
    let (page, size) = page_params(q.page, q.size)?;
    let (sort, desc) = sort_params(q.sort.as_deref())?;
    let filter = filter_params(&q)?;
    let mut conn = state.pool.acquire().await?;
    let (rows, total) = store::task::list(&mut conn, &filter, sort, desc, page - 1, size).await?;
    drop(conn);
    let views = render_tasks(&state.pool, rows).await?;
    let paged = Paged::new(views, total.count, page, size);
    Ok(Success(if total.exact {
        paged
    } else {
        paged.estimated()
    }))
}

/// One task instance with its subtasks.
#[utoipa::path(
    get,
    path = "/api/v2/tasks/instances/{taskInstanceId}",
    tag = "tasks",
    params(TaskPath),
    responses(
        (status = 200, description = "The task", body = Envelope<TaskView>),
        (status = 400, description = "A bad id", body = ErrorEnvelope),
        (status = 404, description = "No such task (TASK_NOT_FOUND)", body = ErrorEnvelope),
    )
)]
pub async fn get_task(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<TaskPath>,
) -> Result<Success<TaskView>> {
    Ok(Success(load_task(&state.pool, p.task_instance_id).await?))
}

/// Retry a FAILED task: its FAILED subtasks run again.
#[utoipa::path(
    post,
    path = "/api/v2/tasks/instances/{taskInstanceId}/retry",
    tag = "tasks",
    params(TaskPath),
    responses(
        (status = 200, description = "The task, RUNNING with operation RETRY", body = Envelope<TaskView>),
        (status = 400, description = "The task is not FAILED or is rolling back (TASK_STATE_INVALID)", body = ErrorEnvelope),
        (status = 404, description = "No such task (TASK_NOT_FOUND)", body = ErrorEnvelope),
        (status = 409, description = "Another task on the same target is RUNNING (TARGET_BUSY)", body = ErrorEnvelope),
    )
)]
pub async fn retry_task(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<TaskPath>,
) -> Result<Success<TaskView>> {
    engine::retry_task(&state.pool, TaskId(p.task_instance_id)).await?;
    Ok(Success(load_task(&state.pool, p.task_instance_id).await?))
}

/// Roll a FAILED task back: undo the subtasks that ran, in reverse order.
#[utoipa::path(
    post,
    path = "/api/v2/tasks/instances/{taskInstanceId}/rollback",
    tag = "tasks",
    params(TaskPath),
    responses(
        (status = 200, description = "The task, RUNNING with operation ROLLBACK", body = Envelope<TaskView>),
        (status = 400, description = "The task is not FAILED (TASK_STATE_INVALID) or prohibits rollback (TASK_PROHIBIT_ROLLBACK)", body = ErrorEnvelope),
        (status = 404, description = "No such task (TASK_NOT_FOUND)", body = ErrorEnvelope),
        (status = 409, description = "Another task on the same target is RUNNING (TARGET_BUSY)", body = ErrorEnvelope),
    )
)]
pub async fn rollback_task(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<TaskPath>,
) -> Result<Success<TaskView>> {
    engine::rollback_task(&state.pool, TaskId(p.task_instance_id)).await?;
    Ok(Success(load_task(&state.pool, p.task_instance_id).await?))
}

/// A subtask of this task, or 404 naming which is missing.
async fn subtask_of(pool: &PgPool, task: i64, subtask: i64) -> Result<SubtaskRow> {
    if store::task::get(pool, TaskId(task)).await?.is_none() {
        return Err(task_not_found(task));
    }
    match store::subtask::get(pool, subtask).await? {
        Some(s) if s.task_id == task => Ok(s),
        _ => Err(Error::not_found(
            code::SUBTASK_NOT_FOUND,
            format!("subtask {subtask} of task {task} does not exist"),
        )),
    }
}

/// A subtask's log, every run or one.
#[utoipa::path(
    get,
    path = "/api/v2/tasks/instances/{taskInstanceId}/subtasks/{subtaskInstanceId}/log",
    tag = "tasks",
    params(SubtaskPath, LogQuery),
    responses(
        (status = 200, description = "The log lines joined by newlines", body = Envelope<LogView>),
        (status = 400, description = "A bad id or runTime", body = ErrorEnvelope),
        (status = 404, description = "No such task or subtask", body = ErrorEnvelope),
    )
)]
pub async fn subtask_log(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<SubtaskPath>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> Result<Success<LogView>> {
    if let Some(rt) = q.run_time {
        if rt < 1 {
            return Err(Error::invalid("query", "runTime", rt, "must be at least 1"));
        }
    }
    let sub = subtask_of(&state.pool, p.task_instance_id, p.subtask_instance_id).await?;
    let lines = store::log::lines(&state.pool, sub.id, q.run_time).await?;
    let log = lines
        .into_iter()
        .map(|(_, line)| line)
        .collect::<Vec<_>>()
        .join("\n");
    Ok(Success(LogView { log }))
}

/// Retry one FAILED subtask.
#[utoipa::path(
    post,
    path = "/api/v2/tasks/instances/{taskInstanceId}/subtasks/{subtaskInstanceId}/retry",
    tag = "tasks",
    params(SubtaskPath),
    responses(
        (status = 200, description = "The subtask, READY with operation RETRY", body = Envelope<SubtaskView>),
        (status = 400, description = "The subtask is not FAILED, or the task is rolling back (SUBTASK_STATE_INVALID)", body = ErrorEnvelope),
        (status = 404, description = "No such task or subtask", body = ErrorEnvelope),
        (status = 409, description = "Another task on the same target is RUNNING (TARGET_BUSY)", body = ErrorEnvelope),
    )
)]
pub async fn retry_subtask(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<SubtaskPath>,
) -> Result<Success<SubtaskView>> {
    let row = engine::retry_subtask(
        &state.pool,
        TaskId(p.task_instance_id),
        SubtaskId(p.subtask_instance_id),
    )
    .await?;
    let edges = Edges::new(store::subtask::edges_for_tasks(&state.pool, &[row.task_id]).await?);
    Ok(Success(edges.view(row)))
}

/// Skip one FAILED subtask without running it.
#[utoipa::path(
    post,
    path = "/api/v2/tasks/instances/{taskInstanceId}/subtasks/{subtaskInstanceId}/skip",
    tag = "tasks",
    params(SubtaskPath),
    responses(
        (status = 200, description = "Skipped", body = EmptyEnvelope),
        (status = 400, description = "The subtask is not FAILED (SUBTASK_CANNOT_SKIP)", body = ErrorEnvelope),
        (status = 404, description = "No such task or subtask", body = ErrorEnvelope),
        (status = 409, description = "Another task on the same target is RUNNING (TARGET_BUSY)", body = ErrorEnvelope),
    )
)]
pub async fn skip_subtask(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<SubtaskPath>,
) -> Result<NoData> {
    engine::skip_subtask(
        &state.pool,
        TaskId(p.task_instance_id),
        SubtaskId(p.subtask_instance_id),
    )
    .await?;
    Ok(NoData)
}

/// Cancel one RUNNING subtask: it becomes CANCELING, then FAILED/CANCEL.
#[utoipa::path(
    post,
    path = "/api/v2/tasks/instances/{taskInstanceId}/subtasks/{subtaskInstanceId}/cancel",
    tag = "tasks",
    params(SubtaskPath),
    responses(
        (status = 200, description = "Cancel requested", body = EmptyEnvelope),
        (status = 400, description = "The subtask is not RUNNING (SUBTASK_STATE_INVALID)", body = ErrorEnvelope),
        (status = 404, description = "No such task or subtask", body = ErrorEnvelope),
    )
)]
pub async fn cancel_subtask(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<SubtaskPath>,
) -> Result<NoData> {
    engine::cancel_subtask(
        &state.pool,
        TaskId(p.task_instance_id),
        SubtaskId(p.subtask_instance_id),
    )
    .await?;
    Ok(NoData)
}
