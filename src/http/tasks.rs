//! Task management: list and read task instances in OCP's JSON shape, retry
//! and roll back tasks, read subtask logs, and retry, skip or cancel
//! subtasks.

use super::envelope::{
    ser_opt_time, ser_time, EmptyEnvelope, Envelope, ErrorEnvelope, NoData, Paged, Success,
};
use super::error::{code, Error, Result};
use super::extract::{positive_id, ApiPath, ApiQuery, Validate};
use super::AppState;
use crate::auth::{Permission, RequireExt};
use crate::engine;
use crate::model::{
    Context, SubtaskId, SubtaskOperation, SubtaskStatus, TaskId, TaskOperation, TaskStatus,
    TaskType,
};
use crate::store::{self, subtask::SubtaskRow, task::ListFilter, task::SortKey, task::TaskRow};
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::collections::{BTreeSet, HashMap};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

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

// ---------------------------------------------------------------- views

/// A task instance as OCP shows it. Absent values are omitted, not null.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    pub id: i64,
    pub name: String,
    #[serde(rename = "type")]
    pub task_type: TaskType,
    pub status: TaskStatus,
    pub operation: TaskOperation,
    /// -1 for manual tasks.
    pub task_definition_id: i64,
    /// Name of the user who requested the task.
    pub creator: String,
    /// Address of the API server that accepted the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    /// Target cluster of a server operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<i64>,
    /// The target cluster, when it is still in the inventory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterRef>,
    /// Target host of an agent operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_id: Option<i64>,
    pub context: Context,
    #[serde(serialize_with = "ser_time")]
    #[schema(value_type = String, format = DateTime)]
    pub create_time: DateTime<Utc>,
    #[serde(serialize_with = "ser_time")]
    #[schema(value_type = String, format = DateTime)]
    pub start_time: DateTime<Utc>,
    #[serde(
        serialize_with = "ser_opt_time",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finish_time: Option<DateTime<Utc>>,
    pub prohibit_rollback: bool,
    pub subtasks: Vec<SubtaskView>,
}

/// The cluster a task targets, in the older OCP shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    pub id: i64,
    pub name: String,
    pub ob_cluster_id: i64,
}

/// A subtask instance (one DAG node) as OCP shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubtaskView {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub class_name: String,
    /// JAVA_TASK, as in OCP.
    pub node_type: String,
    pub operation: SubtaskOperation,
    /// Index in the split list, or -1.
    pub parallel_idx: i32,
    pub prohibit_rollback: bool,
    /// How many times it has run: 1, +1 at every retry.
    pub run_time: i32,
    /// 0-based number of the node within its task.
    pub series_id: i32,
    pub status: SubtaskStatus,
    /// Seconds a run may take.
    pub timeout: i32,
    /// Worker holding the current run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    #[serde(
        serialize_with = "ser_opt_time",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(
        serialize_with = "ser_opt_time",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finish_time: Option<DateTime<Utc>>,
    /// Why the last run failed, when it did (not in OCP's shape; the same
    /// text ends that run's log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Ids of the subtasks that must succeed first.
    pub upstreams: Vec<i64>,
    /// Ids of the subtasks waiting for this one.
    pub downstreams: Vec<i64>,
}

/// A subtask's log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LogView {
    /// The lines, joined by newlines; each run opens with a separator line.
    pub log: String,
}

/// Upstream and downstream ids of every subtask, from edge pairs.
struct Edges {
    ups: HashMap<i64, Vec<i64>>,
    downs: HashMap<i64, Vec<i64>>,
}

impl Edges {
    fn new(pairs: Vec<(i64, i64)>) -> Self {
        let mut ups: HashMap<i64, Vec<i64>> = HashMap::new();
        let mut downs: HashMap<i64, Vec<i64>> = HashMap::new();
        for (u, d) in pairs {
            ups.entry(d).or_default().push(u);
            downs.entry(u).or_default().push(d);
        }
        Edges { ups, downs }
    }

    fn view(&self, s: SubtaskRow) -> SubtaskView {
        SubtaskView {
            upstreams: self.ups.get(&s.id).cloned().unwrap_or_default(),
            downstreams: self.downs.get(&s.id).cloned().unwrap_or_default(),
            id: s.id,
            name: s.name,
            description: s.description,
            class_name: s.class_name,
            node_type: s.node_type,
            operation: s.operation,
            parallel_idx: s.parallel_idx,
            prohibit_rollback: s.prohibit_rollback,
            run_time: s.run_time,
            series_id: s.series_id,
            status: s.status,
            timeout: s.timeout_s,
            executor: s.executor,
            start_time: s.start_time,
            finish_time: s.finish_time,
            error_message: s.error,
        }
    }
}

/// Renders tasks with their subtasks, edges and clusters in three queries.
pub(crate) async fn render_tasks(pool: &PgPool, rows: Vec<TaskRow>) -> Result<Vec<TaskView>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = rows.iter().map(|t| t.id).collect();
    let cluster_ids: Vec<i64> = rows
        .iter()
        .filter_map(|t| t.cluster_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let subtasks = store::subtask::list_for_tasks(pool, &ids).await?;
    let edges = Edges::new(store::subtask::edges_for_tasks(pool, &ids).await?);
    let clusters: HashMap<i64, ClusterRef> = if cluster_ids.is_empty() {
        HashMap::new()
    } else {
        store::inventory::get_clusters(pool, &cluster_ids)
            .await?
            .into_iter()
            .map(|c| {
                (
                    c.id,
                    ClusterRef {
                        id: c.id,
                        name: c.name,
                        ob_cluster_id: c.ob_cluster_id,
                    },
                )
            })
            .collect()
    };
    let mut by_task: HashMap<i64, Vec<SubtaskView>> = HashMap::new();
    for s in subtasks {
        by_task.entry(s.task_id).or_default().push(edges.view(s));
    }
    Ok(rows
        .into_iter()
        .map(|t| TaskView {
            subtasks: by_task.remove(&t.id).unwrap_or_default(),
            cluster: t.cluster_id.and_then(|c| clusters.get(&c).cloned()),
            id: t.id,
            name: t.name,
            task_type: t.task_type,
            status: t.status,
            operation: t.operation,
            task_definition_id: t.task_definition_id,
            creator: t.creator,
            executor: t.executor,
            cluster_id: t.cluster_id,
            host_id: t.host_id,
            context: t.context.0,
            create_time: t.create_time,
            start_time: t.start_time,
            finish_time: t.finish_time,
            prohibit_rollback: t.prohibit_rollback,
        })
        .collect())
}

fn task_not_found(id: i64) -> Error {
    Error::not_found(code::TASK_NOT_FOUND, format!("task {id} does not exist"))
}

/// One task with its subtasks; 404 when it does not exist.
pub(crate) async fn load_task(pool: &PgPool, id: i64) -> Result<TaskView> {
    let row = store::task::get(pool, TaskId(id))
        .await?
        .ok_or_else(|| task_not_found(id))?;
    render_tasks(pool, vec![row])
        .await?
        .pop()
        .ok_or_else(|| task_not_found(id))
}

// ---------------------------------------------------------------- params

/// `{taskInstanceId}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[serde(rename_all = "camelCase")]
pub struct TaskPath {
    /// Task instance id.
    #[param(minimum = 1)]
    pub task_instance_id: i64,
}

impl Validate for TaskPath {
    fn validate(&self) -> Result<()> {
        positive_id("taskInstanceId", self.task_instance_id).map(drop)
    }
}

/// `{taskInstanceId}` and `{subtaskInstanceId}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[serde(rename_all = "camelCase")]
pub struct SubtaskPath {
    /// Task instance id.
    #[param(minimum = 1)]
    pub task_instance_id: i64,
    /// Subtask instance id (of that task).
    #[param(minimum = 1)]
    pub subtask_instance_id: i64,
}

impl Validate for SubtaskPath {
    fn validate(&self) -> Result<()> {
        positive_id("taskInstanceId", self.task_instance_id)?;
        positive_id("subtaskInstanceId", self.subtask_instance_id).map(drop)
    }
}

/// Filters, page and order of the task list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct TaskListQuery {
    /// Part of the task name (case-insensitive).
    pub name: Option<String>,
    /// Statuses, comma-separated: RUNNING, FAILED, SUCCESSFUL.
    pub status: Option<String>,
    /// MANUAL, SCHEDULED or SYS_SCHEDULED.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub task_type: Option<String>,
    /// Target cluster.
    pub cluster_id: Option<i64>,
    /// Target host.
    pub host_id: Option<i64>,
    /// Target OBServer.
    pub server_id: Option<i64>,
    /// Exact creator name.
    pub creator: Option<String>,
    /// Created at or after this time (RFC 3339, e.g.
    /// `2026-12-01T08:00:00+08:00`).
    pub create_time_from: Option<String>,
    /// Created at or before this time (RFC 3339).
    pub create_time_to: Option<String>,
    /// Finished at or after this time (RFC 3339); excludes RUNNING tasks.
    pub finish_time_from: Option<String>,
    /// Finished at or before this time (RFC 3339); excludes RUNNING tasks.
    pub finish_time_to: Option<String>,
    /// Page number, from 1 (default 1).
    #[param(minimum = 1)]
    pub page: Option<i64>,
    /// Page size, 1 to 2000 (default 10).
    #[param(minimum = 1, maximum = 2000)]
    pub size: Option<i64>,
    /// `key[,asc|desc]` with key one of id, name, status, createTime,
    /// startTime, finishTime (default `id,desc`).
    pub sort: Option<String>,
}

/// Page number (1-based) and size from the query, checked.
pub(crate) fn page_params(page: Option<i64>, size: Option<i64>) -> Result<(i64, i64)> {
    let page = page.unwrap_or(1);
    if page < 1 {
        return Err(Error::invalid("query", "page", page, "must be at least 1"));
    }
    let size = size.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&size) {
        return Err(Error::invalid(
            "query",
            "size",
            size,
            format!("must be between 1 and {MAX_PAGE_SIZE}"),
        ));
    }
    Ok((page, size))
}

const SORT_KEYS: &str = "id, name, status, createTime, startTime, finishTime";

fn sort_params(sort: Option<&str>) -> Result<(SortKey, bool)> {
    let Some(sort) = sort.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok((SortKey::Id, true));
    };
    let (key, dir) = match sort.split_once(',') {
        Some((k, d)) => (k.trim(), d.trim()),
        None => (sort, "asc"),
    };
    let key = SortKey::parse(key).ok_or_else(|| {
        Error::invalid(
            "query",
            "sort",
            sort,
            format!("unknown sort key {key:?}; expected one of {SORT_KEYS}"),
        )
    })?;
    let desc = match dir.to_ascii_lowercase().as_str() {
        "asc" => false,
        "desc" => true,
        _ => {
            return Err(Error::invalid(
                "query",
                "sort",
                sort,
                format!("unknown direction {dir:?}; expected asc or desc"),
            ))
        }
    };
    Ok((key, desc))
}

fn filter_params(q: &TaskListQuery) -> Result<ListFilter> {
    let mut statuses = Vec::new();
    if let Some(list) = &q.status {
        for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let status = s
                .parse::<TaskStatus>()
                .map_err(|e| Error::invalid("query", "status", s, e))?;
            statuses.push(status);
        }
    }
    let task_type = match q.task_type.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(t) => Some(
            t.parse::<TaskType>()
                .map_err(|e| Error::invalid("query", "type", t, e))?,
        ),
    };
    let non_empty = |s: &Option<String>| s.as_ref().filter(|s| !s.is_empty()).cloned();
    let (create_from, create_to) = time_range(
        ("createTimeFrom", &q.create_time_from),
        ("createTimeTo", &q.create_time_to),
    )?;
    let (finish_from, finish_to) = time_range(
        ("finishTimeFrom", &q.finish_time_from),
        ("finishTimeTo", &q.finish_time_to),
    )?;
    Ok(ListFilter {
        name: non_empty(&q.name),
        statuses,
        task_type,
        cluster_id: q.cluster_id,
        host_id: q.host_id,
        server_id: q.server_id,
        creator: non_empty(&q.creator),
        create_from,
        create_to,
        finish_from,
        finish_to,
    })
}

/// An RFC 3339 time of the query named `field`; empty is absent. A `+`
/// of the offset sent unencoded arrives as a space, and is read as `+`.
fn query_time(field: &str, value: &Option<String>) -> Result<Option<DateTime<Utc>>> {
    let Some(v) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let parsed = DateTime::parse_from_rfc3339(v).or_else(|e| match v.rsplit_once(' ') {
        Some((head, offset)) if head.contains('T') => {
            DateTime::parse_from_rfc3339(&format!("{head}+{offset}"))
        }
        _ => Err(e),
    });
    match parsed {
        Ok(t) => Ok(Some(t.with_timezone(&Utc))),
        Err(e) => Err(Error::invalid(
            "query",
            field,
            v,
            format!("not an RFC 3339 time ({e}); e.g. 2026-12-01T08:00:00+08:00"),
        )),
    }
}

/// Inclusive bounds of a time range, each optional.
type TimeRange = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// A `from`..`to` pair of query times; `from` after `to` is refused,
/// naming `from`.
fn time_range(from: (&str, &Option<String>), to: (&str, &Option<String>)) -> Result<TimeRange> {
    let start = query_time(from.0, from.1)?;
    let end = query_time(to.0, to.1)?;
    if let (Some(a), Some(b)) = (start, end) {
        if a > b {
            return Err(Error::invalid(
                "query",
                from.0,
                from.1.as_deref().unwrap_or_default(),
                format!("must not be after {}", to.0),
            ));
        }
    }
    Ok((start, end))
}

/// `runTime` of the log.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    /// Only this run's lines (from 1); all runs when absent.
    #[param(minimum = 1)]
    pub run_time: Option<i32>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_parses_key_and_direction() {
        assert_eq!(sort_params(None).ok(), Some((SortKey::Id, true)));
        assert_eq!(
            sort_params(Some("createTime,asc")).ok(),
            Some((SortKey::CreateTime, false))
        );
        assert_eq!(sort_params(Some("name")).ok(), Some((SortKey::Name, false)));
        assert_eq!(sort_params(Some("id,DESC")).ok(), Some((SortKey::Id, true)));
        assert!(sort_params(Some("bogus,desc")).is_err());
        assert!(sort_params(Some("id,sideways")).is_err());
    }

    #[test]
    fn page_and_size_are_bounded() {
        assert_eq!(page_params(None, None).ok(), Some((1, 10)));
        assert_eq!(page_params(Some(3), Some(2000)).ok(), Some((3, 2000)));
        assert!(page_params(Some(0), None).is_err());
        assert!(page_params(None, Some(2001)).is_err());
        assert!(page_params(None, Some(0)).is_err());
    }

    #[test]
    fn filters_parse_status_lists() {
        let q = TaskListQuery {
            status: Some("RUNNING, FAILED".into()),
            task_type: Some("MANUAL".into()),
            name: Some(String::new()),
            ..Default::default()
        };
        let f = filter_params(&q).ok().unwrap_or_default();
        assert_eq!(f.statuses, [TaskStatus::Running, TaskStatus::Failed]);
        assert_eq!(f.task_type, Some(TaskType::Manual));
        assert_eq!(f.name, None);
        let bad = TaskListQuery {
            status: Some("RUNNING,DONE".into()),
            ..Default::default()
        };
        assert!(filter_params(&bad).is_err());
    }
}
