//! SQL of the `task_instance` aggregate; a task is inserted together with its
//! subtasks and their edges. The filtered, sorted list is in [`list`].

use super::Result;
use crate::dag::Plan;
use crate::model::{Context, TaskId, TaskOperation, TaskStatus, TaskType};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};

mod list;

pub use list::{
    count, explain_list, list, ListFilter, SortKey, Total, EXACT_COUNT_BOUND, GATHER_BELOW,
};

/// The partial unique index that lets one RUNNING task hold a key (see
/// `task_target`, migration V9).
pub const ONE_RUNNING_PER_TARGET: &str = "task_target_one_running_per_key";
/// The unique constraint on a task's Idempotency-Key.
pub const IDEMPOTENCY_KEY_INDEX: &str = "task_instance_idempotency_key_key";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaskRow {
    pub id: i64,
    pub name: String,
    #[sqlx(rename = "type", try_from = "String")]
    pub task_type: TaskType,
    #[sqlx(try_from = "String")]
    pub status: TaskStatus,
    #[sqlx(try_from = "String")]
    pub operation: TaskOperation,
    pub task_definition_id: i64,
    pub creator: String,
    pub executor: Option<String>,
    pub cluster_id: Option<i64>,
    pub host_id: Option<i64>,
    pub server_id: Option<i64>,
    pub target_key: Option<String>,
    pub context: Json<Context>,
    pub prohibit_rollback: bool,
    pub max_concurrency: i32,
    pub trace_id: String,
    pub idempotency_key: Option<String>,
    pub create_time: DateTime<Utc>,
    pub start_time: DateTime<Utc>,
    pub finish_time: Option<DateTime<Utc>>,
}

/// The columns of [`TaskRow`], for the list's built statements (the
/// compile-checked ones spell them out).
const COLUMNS: &str = "id, name, type, status, operation, task_definition_id, creator, executor, \
     cluster_id, host_id, server_id, target_key, context, prohibit_rollback, max_concurrency, \
     trace_id, idempotency_key, create_time, start_time, finish_time";

/// A task to insert, with its plan.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub name: String,
    pub task_type: TaskType,
    pub creator: String,
    pub executor: Option<String>,
    pub cluster_id: Option<i64>,
    pub host_id: Option<i64>,
    pub server_id: Option<i64>,
    pub target_key: Option<String>,
    /// Keys the task holds besides `target_key` while it is RUNNING (a
    /// zone's servers, its cluster, a batch's hosts); see `task_target`.
    pub holds: Vec<String>,
    pub context: Context,
    pub prohibit_rollback: bool,
    pub max_concurrency: i32,
    pub trace_id: String,
    pub idempotency_key: Option<String>,
}

impl NewTask {
    /// Every key the task holds, its own target first, without repeats.
    pub fn held_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = Vec::with_capacity(self.holds.len() + 1);
        for k in self.target_key.iter().chain(&self.holds) {
            if !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
        keys
    }
}

/// A key that another RUNNING task holds, and that task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub target_key: String,
    pub task_id: i64,
}

/// The RUNNING task (other than `except`) holding one of `keys`, if any.
pub async fn holder_of(
    ex: impl PgExecutor<'_>,
    keys: &[&str],
    except: Option<TaskId>,
) -> Result<Option<Holder>> {
    Ok(sqlx::query_as!(
        Holder,
        "select target_key, task_id from task_target
         where running and target_key = any($1) and task_id is distinct from $2
         order by task_id limit 1",
        keys as _,
        except.map(|t| t.0),
    )
    .fetch_optional(ex)
    .await?)
}

/// The keys a task holds (or held), its own target first.
pub async fn held_keys(ex: impl PgExecutor<'_>, task: TaskId) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar!(
        "select k.target_key from task_target k join task_instance t on t.id = k.task_id
         where k.task_id = $1
         order by k.target_key is distinct from t.target_key, k.target_key",
        task.0,
    )
    .fetch_all(ex)
    .await?)
}

/// A planned DAG as the column arrays that `insert` unnests, borrowed from
/// the plan: series ids are plan indexes, edges are pairs of them.
struct PlanColumns<'a> {
    series: Vec<i32>,
    names: Vec<&'a str>,
    descriptions: Vec<&'a str>,
    classes: Vec<&'a str>,
    timeouts: Vec<i32>,
    retries: Vec<i32>,
    parallel: Vec<i32>,
    prohibit: Vec<bool>,
    pending: Vec<i32>,
    statuses: Vec<&'static str>,
    contexts: Vec<Option<Json<&'a Context>>>,
    edge_ups: Vec<i32>,
    edge_downs: Vec<i32>,
}

impl<'a> PlanColumns<'a> {
    fn new(plan: &'a Plan, ready: &'a [Option<Context>]) -> Self {
        let nodes = &plan.nodes;
        let input = |i: usize| ready.get(i).and_then(Option::as_ref);
        let (edge_ups, edge_downs) = nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.upstreams.iter().map(move |&u| (u as i32, i as i32)))
            .unzip();
        PlanColumns {
            series: (0..nodes.len() as i32).collect(),
            names: nodes.iter().map(|n| n.spec.name.as_str()).collect(),
            descriptions: nodes.iter().map(|n| n.spec.description.as_str()).collect(),
            classes: nodes.iter().map(|n| n.spec.class_name.as_str()).collect(),
            timeouts: nodes.iter().map(|n| n.spec.timeout_s).collect(),
            retries: nodes.iter().map(|n| n.spec.retry_limit).collect(),
            parallel: nodes.iter().map(|n| n.parallel_idx).collect(),
            prohibit: nodes.iter().map(|n| n.spec.prohibit_rollback).collect(),
            pending: nodes.iter().map(|n| n.upstreams.len() as i32).collect(),
            statuses: (0..nodes.len())
                .map(|i| {
                    if input(i).is_some() {
                        "READY"
                    } else {
                        "PENDING"
                    }
                })
                .collect(),
            contexts: (0..nodes.len()).map(|i| input(i).map(Json)).collect(),
            edge_ups,
            edge_downs,
        }
    }
}

/// Inserts a task with its planned subtasks and edges, takes its keys in
/// `task_target` and wakes idle workers (see [`super::Wake`]), in one statement: nothing is
/// visible until it all is, a key another RUNNING task holds refuses it all
/// (unique violation of [`ONE_RUNNING_PER_TARGET`]), and the roots' READY time is
/// taken one round trip before the commit. Subtasks
/// with an input in `ready` start READY with it, the rest PENDING.
pub async fn insert(
    ex: impl PgExecutor<'_>,
    t: &NewTask,
    plan: &Plan,
    ready: &[Option<Context>],
) -> Result<TaskId> {
    let c = PlanColumns::new(plan, ready);
    let id = sqlx::query_scalar!(
        "with t as ( \
             insert into task_instance (name, type, status, operation, creator, executor, \
                 cluster_id, host_id, server_id, target_key, context, prohibit_rollback, \
                 max_concurrency, trace_id, idempotency_key) \
             values ($1, $2, 'RUNNING', 'EXECUTE', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             returning id \
         ), s as ( \
             insert into subtask_instance (task_id, series_id, name, description, class_name, \
                 status, operation, timeout_s, retry_limit, parallel_idx, prohibit_rollback, \
                 pending_upstreams, context, run_after) \
             select t.id, v.s, v.nm, v.d, v.c, v.st, 'EXECUTE', v.t, v.r, v.p, v.pr, v.pu, v.ctx, \
                 case when v.st = 'READY' then clock_timestamp() end \
             from t, unnest($14::int[], $15::text[], $16::text[], $17::text[], $18::int[], \
                            $19::int[], $20::int[], $21::bool[], $22::int[], $23::text[], \
                            $24::jsonb[]) as v(s, nm, d, c, t, r, p, pr, pu, st, ctx) \
             order by v.s \
             returning id, series_id \
         ), e as ( \
             insert into subtask_edge (upstream_id, downstream_id) \
             select su.id, sd.id \
             from unnest($25::int[], $26::int[]) as x(u, d) \
             join s su on su.series_id = x.u \
             join s sd on sd.series_id = x.d \
         ), h as ( \
             insert into task_target (task_id, target_key, running) \
             select t.id, k, true from t, unnest($28::text[]) as k \
         ) \
         select t.id as \"id!\" from t, (select taskd_wake($27)) n",
        t.name,
        t.task_type.as_str(),
        t.creator,
        t.executor,
        t.cluster_id,
        t.host_id,
        t.server_id,
        t.target_key,
        Json(&t.context) as _,
        t.prohibit_rollback,
        t.max_concurrency,
        t.trace_id,
        t.idempotency_key,
        &c.series,
        &c.names as _,
        &c.descriptions as _,
        &c.classes as _,
        &c.timeouts,
        &c.retries,
        &c.parallel,
        &c.prohibit,
        &c.pending,
        &c.statuses as _,
        &c.contexts as _,
        &c.edge_ups,
        &c.edge_downs,
        super::wake_mode().as_str(),
        &t.held_keys() as _,
    )
    .fetch_one(ex)
    .await?;
    Ok(TaskId(id))
}

pub async fn get(ex: impl PgExecutor<'_>, id: TaskId) -> Result<Option<TaskRow>> {
    Ok(sqlx::query_as!(
        TaskRow,
        r#"select id, name, type as "task_type: TaskType", status as "status: TaskStatus",
               operation as "operation: TaskOperation", task_definition_id, creator, executor,
               cluster_id, host_id, server_id, target_key, context as "context: Json<Context>",
               prohibit_rollback, max_concurrency, trace_id, idempotency_key, create_time,
               start_time, finish_time
           from task_instance where id = $1"#,
        id.0
    )
    .fetch_optional(ex)
    .await?)
}

/// Locks the task row: every change to a task's subtasks other than the
/// claim happens under this lock, taken first, so they never deadlock.
pub async fn lock(conn: &mut PgConnection, id: TaskId) -> Result<Option<TaskRow>> {
    Ok(sqlx::query_as!(
        TaskRow,
        r#"select id, name, type as "task_type: TaskType", status as "status: TaskStatus",
               operation as "operation: TaskOperation", task_definition_id, creator, executor,
               cluster_id, host_id, server_id, target_key, context as "context: Json<Context>",
               prohibit_rollback, max_concurrency, trace_id, idempotency_key, create_time,
               start_time, finish_time
           from task_instance where id = $1 for update"#,
        id.0
    )
    .fetch_optional(conn)
    .await?)
}

/// Each task's count of READY, RUNNING and CANCELING subtasks, as
/// (id, active): read again after a statement that changed it.
pub async fn active_counts(conn: &mut PgConnection, ids: &[i64]) -> Result<Vec<(i64, i32)>> {
    Ok(
        sqlx::query_as("select id, active from task_instance where id = any($1)")
            .bind(ids)
            .fetch_all(conn)
            .await?,
    )
}

/// Locks several task rows in id order.
pub async fn lock_many(conn: &mut PgConnection, ids: &[i64]) -> Result<Vec<TaskRow>> {
    Ok(sqlx::query_as!(
        TaskRow,
        r#"select id, name, type as "task_type: TaskType", status as "status: TaskStatus",
               operation as "operation: TaskOperation", task_definition_id, creator, executor,
               cluster_id, host_id, server_id, target_key, context as "context: Json<Context>",
               prohibit_rollback, max_concurrency, trace_id, idempotency_key, create_time,
               start_time, finish_time
           from task_instance where id = any($1) order by id for update"#,
        ids,
    )
    .fetch_all(conn)
    .await?)
}

pub async fn find_by_idempotency_key(
    ex: impl PgExecutor<'_>,
    key: &str,
) -> Result<Option<TaskRow>> {
    Ok(sqlx::query_as!(
        TaskRow,
        r#"select id, name, type as "task_type: TaskType", status as "status: TaskStatus",
               operation as "operation: TaskOperation", task_definition_id, creator, executor,
               cluster_id, host_id, server_id, target_key, context as "context: Json<Context>",
               prohibit_rollback, max_concurrency, trace_id, idempotency_key, create_time,
               start_time, finish_time
           from task_instance where idempotency_key = $1"#,
        key
    )
    .fetch_optional(ex)
    .await?)
}

/// Sets status and operation; finish_time follows the status.
pub async fn set_state(
    conn: &mut PgConnection,
    id: TaskId,
    status: TaskStatus,
    operation: TaskOperation,
) -> Result<()> {
    sqlx::query!(
        "update task_instance set status = $2, operation = $3,
             finish_time = case when $2 = 'RUNNING' then null else now() end
         where id = $1",
        id.0,
        status.as_str(),
        operation.as_str(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets the status of several tasks (operation unchanged) in one statement.
pub async fn set_statuses(conn: &mut PgConnection, ids: &[i64], statuses: &[&str]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "update task_instance t set status = v.st,
             finish_time = case when v.st = 'RUNNING' then null else now() end
         from unnest($1::bigint[], $2::text[]) as v(id, st) where t.id = v.id",
        ids,
        statuses as _,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The latest `per` tasks (by id) of each target key (`server:{id}`,
/// `host:{id}`), newest first within a key.
pub async fn latest_by_target(
    ex: impl PgExecutor<'_>,
    keys: &[String],
    per: i64,
) -> Result<Vec<TaskRow>> {
    Ok(sqlx::query_as!(
        TaskRow,
        r#"select t.id, t.name, t.type as "task_type: TaskType", t.status as "status: TaskStatus",
               t.operation as "operation: TaskOperation", t.task_definition_id, t.creator,
               t.executor, t.cluster_id, t.host_id, t.server_id, t.target_key,
               t.context as "context: Json<Context>", t.prohibit_rollback, t.max_concurrency,
               t.trace_id, t.idempotency_key, t.create_time, t.start_time, t.finish_time
           from unnest($1::text[]) as k (key) cross join lateral (
               select * from task_instance i where i.target_key = k.key
               order by i.id desc limit $2
           ) t order by t.target_key, t.id desc"#,
        keys,
        per,
    )
    .fetch_all(ex)
    .await?)
}
