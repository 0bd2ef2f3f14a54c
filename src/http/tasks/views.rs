//! The task API's answers: tasks, subtasks and logs in OCP's JSON shape,
//! rendered from stored rows with their DAG edges.

use super::super::envelope::{ser_opt_time, ser_time};
use super::super::error::{code, Error, Result};
use crate::model::{
    Context, SubtaskOperation, SubtaskStatus, TaskId, TaskOperation, TaskStatus, TaskType,
};
use crate::store::{self, subtask::SubtaskRow, task::TaskRow};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use std::collections::{BTreeSet, HashMap};
use utoipa::ToSchema;

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
    /// The trace of the request that created the task, and of every run of
    /// its subtasks (not in OCP's shape). A trace id of 32 hex digits is
    /// the W3C trace id of their spans; a shorter hex one, zero-padded on
    /// the left; any other, the first 16 bytes of its SHA-256.
    pub trace_id: String,
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
pub(super) struct Edges {
    ups: HashMap<i64, Vec<i64>>,
    downs: HashMap<i64, Vec<i64>>,
}

impl Edges {
    pub(super) fn new(pairs: Vec<(i64, i64)>) -> Self {
        let mut ups: HashMap<i64, Vec<i64>> = HashMap::new();
        let mut downs: HashMap<i64, Vec<i64>> = HashMap::new();
        for (u, d) in pairs {
            ups.entry(d).or_default().push(u);
            downs.entry(u).or_default().push(d);
        }
        Edges { ups, downs }
    }

    pub(super) fn view(&self, s: SubtaskRow) -> SubtaskView {
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
            trace_id: t.trace_id,
        })
        .collect())
}

pub(super) fn task_not_found(id: i64) -> Error {
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
