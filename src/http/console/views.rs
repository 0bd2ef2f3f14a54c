//! What the console shows beyond the REST API: a task with, for each
//! subtask, its error, its runs, why it waits and which actions the state
//! machine (`model::transitions`) and the user's roles allow; the latest
//! tasks of each server and host; and which server operations each
//! server's state admits (`operations::server`), for the inventory.

use crate::auth::{Permission, Principal};
use crate::http::envelope::{ser_opt_time, ser_time, Success};
use crate::http::error::{code, Error, Result};
use crate::http::extract::ApiPath;
use crate::http::tasks::{render_tasks, TaskPath, TaskView};
use crate::http::AppState;
use crate::model::{transitions, SubtaskStatus, TaskId, TaskOperation, TaskStatus};
use crate::store::{self, log::RunSpan, subtask::SubtaskRow, task::TaskRow};
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;

/// Which task actions are offered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskActions {
    pub retry: bool,
    pub rollback: bool,
}

/// Which subtask actions are offered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubtaskActions {
    pub retry: bool,
    pub skip: bool,
    pub cancel: bool,
}

/// One run of a subtask, from its log.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    pub run_time: i32,
    #[serde(serialize_with = "ser_time")]
    pub first_time: DateTime<Utc>,
    #[serde(serialize_with = "ser_time")]
    pub last_time: DateTime<Utc>,
    pub lines: i64,
    /// The run's separator line (operation and time).
    pub opening: String,
}

/// A subtask's details that OCP's task JSON does not carry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub retry_limit: i32,
    #[serde(
        serialize_with = "ser_opt_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub run_after: Option<DateTime<Utc>>,
    /// Why it is not running yet, for a PENDING or READY subtask of a
    /// running task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    pub actions: SubtaskActions,
    pub runs: Vec<RunView>,
}

/// A failed subtask, for the top of a failed task.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub subtask_id: i64,
    pub name: String,
    pub run_time: i32,
    pub error: String,
    #[serde(
        serialize_with = "ser_opt_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub finish_time: Option<DateTime<Utc>>,
}

/// `GET /console/api/tasks/{id}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDetail {
    pub task: TaskView,
    /// The user may retry, roll back, skip and cancel (TASK_MANAGER).
    pub can_manage: bool,
    pub actions: TaskActions,
    /// Why a running task has nothing running, when that is so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    pub failures: Vec<Failure>,
    pub nodes: Vec<NodeView>,
}

fn task_actions(task: &TaskRow, subs: &[SubtaskRow]) -> TaskActions {
    let prohibited = task.prohibit_rollback
        || task.context.0.prohibits_rollback()
        || subs
            .iter()
            .any(|s| s.prohibit_rollback && s.start_time.is_some());
    TaskActions {
        retry: transitions::check_task_retry(task.status, task.operation).is_ok(),
        rollback: transitions::check_task_rollback(task.status, task.operation, prohibited).is_ok(),
    }
}

fn subtask_actions(task: &TaskRow, s: &SubtaskRow) -> SubtaskActions {
    SubtaskActions {
        retry: transitions::check_subtask_retry(task.operation, s.status).is_ok(),
        skip: transitions::skip_outcome(task.operation, s.status).is_ok(),
        cancel: transitions::check_subtask_cancel(s.status).is_ok(),
    }
}

/// Why `s` is not running, in words.
fn waiting_reason(
    task: &TaskRow,
    s: &SubtaskRow,
    names: &HashMap<i64, (&str, SubtaskStatus)>,
    ups: &[i64],
    downs: &[i64],
    active: usize,
    now: DateTime<Utc>,
) -> Option<String> {
    if task.status != TaskStatus::Running {
        return None;
    }
    let list = |ids: &[i64], pred: &dyn Fn(SubtaskStatus) -> bool| -> String {
        ids.iter()
            .filter_map(|i| names.get(i))
            .filter(|(_, st)| pred(*st))
            .map(|(n, st)| format!("{n} ({st})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match s.status {
        SubtaskStatus::Pending if task.operation == TaskOperation::Rollback => {
            let left = list(downs, &|st| st != SubtaskStatus::Pending);
            (!left.is_empty()).then(|| format!("waiting for downstreams to roll back: {left}"))
        }
        SubtaskStatus::Pending if s.pending_upstreams > 0 => Some(format!(
            "waiting for upstream: {}",
            list(ups, &|st| st != SubtaskStatus::Successful)
        )),
        SubtaskStatus::Pending => Some(format!(
            "waiting for a slot: the task's concurrency limit of {} is reached ({active} ready or running)",
            task.max_concurrency
        )),
        SubtaskStatus::Ready => Some(match s.run_after {
            Some(t) if t > now => format!(
                "retry backoff until {} (run {} of at most {})",
                crate::http::envelope::format_time(&t),
                s.run_time,
                s.retry_limit + 1
            ),
            _ => "ready, waiting for a free worker slot".to_string(),
        }),
        _ => None,
    }
}

/// The task with everything the console's detail view shows.
pub async fn task_detail(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(p): ApiPath<TaskPath>,
) -> Result<Success<TaskDetail>> {
    let pool = &state.pool;
    let id = p.task_instance_id;
    let row = store::task::get(pool, TaskId(id)).await?.ok_or_else(|| {
        Error::not_found(code::TASK_NOT_FOUND, format!("task {id} does not exist"))
    })?;
    let subs = store::subtask::list_for_task(pool, TaskId(id)).await?;
    let view = render_tasks(pool, vec![row.clone()])
        .await?
        .pop()
        .ok_or_else(|| Error::Internal(format!("task {id} vanished while read")))?;
    let ids: Vec<i64> = subs.iter().map(|s| s.id).collect();
    let mut runs: HashMap<i64, Vec<RunView>> = HashMap::new();
    for r in store::log::runs(pool, &ids).await? {
        let RunSpan {
            subtask_id,
            run_time,
            first_time,
            last_time,
            lines,
            opening,
        } = r;
        runs.entry(subtask_id).or_default().push(RunView {
            run_time,
            first_time,
            last_time,
            lines,
            opening,
        });
    }
    let can_manage = principal.allows(Permission::TaskManage, None);
    let names: HashMap<i64, (&str, SubtaskStatus)> = subs
        .iter()
        .map(|s| (s.id, (s.name.as_str(), s.status)))
        .collect();
    let edges: HashMap<i64, (&[i64], &[i64])> = view
        .subtasks
        .iter()
        .map(|s| (s.id, (s.upstreams.as_slice(), s.downstreams.as_slice())))
        .collect();
    let active = subs
        .iter()
        .filter(|s| {
            matches!(
                s.status,
                SubtaskStatus::Ready | SubtaskStatus::Running | SubtaskStatus::Canceling
            )
        })
        .count();
    let now = Utc::now();
    let nodes: Vec<NodeView> = subs
        .iter()
        .map(|s| {
            let (ups, downs) = edges.get(&s.id).copied().unwrap_or((&[], &[]));
            let actions = if can_manage {
                subtask_actions(&row, s)
            } else {
                SubtaskActions::default()
            };
            NodeView {
                id: s.id,
                error: s.error.clone(),
                retry_limit: s.retry_limit,
                run_after: s.run_after,
                waiting: waiting_reason(&row, s, &names, ups, downs, active, now),
                actions,
                runs: runs.remove(&s.id).unwrap_or_default(),
            }
        })
        .collect();
    let running = subs
        .iter()
        .any(|s| matches!(s.status, SubtaskStatus::Running | SubtaskStatus::Canceling));
    let waiting = (row.status == TaskStatus::Running && !running)
        .then(|| {
            nodes
                .iter()
                .zip(&subs)
                .find_map(|(n, s)| n.waiting.as_ref().map(|w| format!("{}: {w}", s.name)))
        })
        .flatten();
    let failures = subs
        .iter()
        .filter(|s| s.status == SubtaskStatus::Failed)
        .map(|s| Failure {
            subtask_id: s.id,
            name: s.name.clone(),
            run_time: s.run_time,
            error: s
                .error
                .clone()
                .unwrap_or_else(|| "no error recorded".into()),
            finish_time: s.finish_time,
        })
        .collect();
    let actions = if can_manage {
        task_actions(&row, &subs)
    } else {
        TaskActions::default()
    };
    Ok(Success(TaskDetail {
        task: view,
        can_manage,
        actions,
        waiting,
        failures,
        nodes,
    }))
}

/// A task in the inventory's "latest tasks".
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LatestTask {
    pub id: i64,
    pub name: String,
    pub status: TaskStatus,
    pub operation: TaskOperation,
    pub target: String,
    #[serde(serialize_with = "ser_time")]
    pub create_time: DateTime<Utc>,
}

/// How many tasks of each target the inventory shows.
const LATEST_PER_TARGET: i64 = 3;

/// `GET /console/api/latest-tasks`: the latest tasks of every server and
/// host, newest first within each target.
pub async fn latest_tasks(State(state): State<AppState>) -> Result<Success<Vec<LatestTask>>> {
    let pool = &state.pool;
    let keys = store::inventory::target_keys(pool).await?;
    let rows = store::task::latest_by_target(pool, &keys, LATEST_PER_TARGET).await?;
    Ok(Success(
        rows.into_iter()
            .map(|t| LatestTask {
                id: t.id,
                name: t.name,
                status: t.status,
                operation: t.operation,
                target: t.target_key.unwrap_or_default(),
                create_time: t.create_time,
            })
            .collect(),
    ))
}

/// Which operations a server's state admits, without and with `force`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerOperations {
    pub server_id: i64,
    pub cluster_id: i64,
    pub restart: bool,
    pub restart_force: bool,
    pub start: bool,
    pub stop: bool,
    pub stop_force: bool,
}

/// `GET /console/api/server-operations`: for every server, the operations
/// its state admits now (the operation itself checks again when asked).
pub async fn server_operations(
    State(state): State<AppState>,
) -> Result<Success<Vec<ServerOperations>>> {
    use crate::dag::templates::Template;
    use crate::operations::ServerOperation;
    let servers = store::inventory::all_servers(&state.pool).await?;
    Ok(Success(
        servers
            .into_iter()
            .map(|s| {
                let ok = |template, force| {
                    ServerOperation {
                        template,
                        force,
                        cluster: s.cluster_id,
                        server: s.id,
                    }
                    .accepts(s.status)
                };
                ServerOperations {
                    server_id: s.id,
                    cluster_id: s.cluster_id,
                    restart: ok(Template::RestartObserver, false),
                    restart_force: ok(Template::RestartObserver, true),
                    start: ok(Template::StartObserver, false),
                    stop: ok(Template::StopObserver, false),
                    stop_force: ok(Template::StopObserver, true),
                }
            })
            .collect(),
    ))
}
