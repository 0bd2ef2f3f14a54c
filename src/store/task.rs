//! SQL of the `task_instance` aggregate; a task is inserted together with its
//! subtasks and their edges.

use super::Result;
use crate::dag::Plan;
use crate::model::{Context, TaskId, TaskOperation, TaskStatus, TaskType};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};

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
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
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
    Ok(sqlx::query_as(
        "select target_key, task_id from task_target \
         where running and target_key = any($1) and task_id is distinct from $2 \
         order by task_id limit 1",
    )
    .bind(keys)
    .bind(except.map(|t| t.0))
    .fetch_optional(ex)
    .await?)
}

/// The keys a task holds (or held), its own target first.
pub async fn held_keys(ex: impl PgExecutor<'_>, task: TaskId) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "select k.target_key from task_target k join task_instance t on t.id = k.task_id \
         where k.task_id = $1 \
         order by k.target_key is distinct from t.target_key, k.target_key",
    )
    .bind(task.0)
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
    let id: i64 = sqlx::query_scalar(
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
         select t.id from t, (select taskd_wake($27)) n",
    )
    .bind(&t.name)
    .bind(t.task_type.as_str())
    .bind(&t.creator)
    .bind(&t.executor)
    .bind(t.cluster_id)
    .bind(t.host_id)
    .bind(t.server_id)
    .bind(&t.target_key)
    .bind(Json(&t.context))
    .bind(t.prohibit_rollback)
    .bind(t.max_concurrency)
    .bind(&t.trace_id)
    .bind(&t.idempotency_key)
    .bind(&c.series)
    .bind(&c.names)
    .bind(&c.descriptions)
    .bind(&c.classes)
    .bind(&c.timeouts)
    .bind(&c.retries)
    .bind(&c.parallel)
    .bind(&c.prohibit)
    .bind(&c.pending)
    .bind(&c.statuses)
    .bind(&c.contexts)
    .bind(&c.edge_ups)
    .bind(&c.edge_downs)
    .bind(super::wake_mode().as_str())
    .bind(t.held_keys())
    .fetch_one(ex)
    .await?;
    Ok(TaskId(id))
}

pub async fn get(ex: impl PgExecutor<'_>, id: TaskId) -> Result<Option<TaskRow>> {
    let sql = format!("select {COLUMNS} from task_instance where id = $1");
    Ok(sqlx::query_as(&sql).bind(id.0).fetch_optional(ex).await?)
}

/// Locks the task row: every change to a task's subtasks other than the
/// claim happens under this lock, taken first, so they never deadlock.
pub async fn lock(conn: &mut PgConnection, id: TaskId) -> Result<Option<TaskRow>> {
    let sql = format!("select {COLUMNS} from task_instance where id = $1 for update");
    Ok(sqlx::query_as(&sql).bind(id.0).fetch_optional(conn).await?)
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
    let sql =
        format!("select {COLUMNS} from task_instance where id = any($1) order by id for update");
    Ok(sqlx::query_as(&sql).bind(ids).fetch_all(conn).await?)
}

pub async fn find_by_idempotency_key(
    ex: impl PgExecutor<'_>,
    key: &str,
) -> Result<Option<TaskRow>> {
    let sql = format!("select {COLUMNS} from task_instance where idempotency_key = $1");
    Ok(sqlx::query_as(&sql).bind(key).fetch_optional(ex).await?)
}

/// Sets status and operation; finish_time follows the status.
pub async fn set_state(
    conn: &mut PgConnection,
    id: TaskId,
    status: TaskStatus,
    operation: TaskOperation,
) -> Result<()> {
    sqlx::query(
        "update task_instance set status = $2, operation = $3, \
             finish_time = case when $2 = 'RUNNING' then null else now() end \
         where id = $1",
    )
    .bind(id.0)
    .bind(status.as_str())
    .bind(operation.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets the status of several tasks (operation unchanged) in one statement.
pub async fn set_statuses(conn: &mut PgConnection, ids: &[i64], statuses: &[&str]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "update task_instance t set status = v.st, \
             finish_time = case when v.st = 'RUNNING' then null else now() end \
         from unnest($1::bigint[], $2::text[]) as v(id, st) where t.id = v.id",
    )
    .bind(ids)
    .bind(statuses)
    .execute(conn)
    .await?;
    Ok(())
}

/// Filters of the task list; every field is optional. Time bounds are
/// inclusive.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub name: Option<String>,
    pub statuses: Vec<TaskStatus>,
    pub task_type: Option<TaskType>,
    pub cluster_id: Option<i64>,
    pub host_id: Option<i64>,
    pub server_id: Option<i64>,
    pub creator: Option<String>,
    pub create_from: Option<DateTime<Utc>>,
    pub create_to: Option<DateTime<Utc>>,
    pub finish_from: Option<DateTime<Utc>>,
    pub finish_to: Option<DateTime<Utc>>,
}

/// Columns the list may be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Id,
    Name,
    Status,
    CreateTime,
    StartTime,
    FinishTime,
}

impl SortKey {
    pub fn parse(s: &str) -> Option<SortKey> {
        Some(match s {
            "id" => SortKey::Id,
            "name" => SortKey::Name,
            "status" => SortKey::Status,
            "createTime" => SortKey::CreateTime,
            "startTime" => SortKey::StartTime,
            "finishTime" => SortKey::FinishTime,
            _ => return None,
        })
    }

    /// The `order by` of this key, each matching an index `(column, id)`
    /// read forwards or backwards. A RUNNING task has no finish time and
    /// sorts as if it finished after every other (last ascending, first
    /// descending), which is the order of that index.
    fn order_by(self, descending: bool) -> String {
        let column = match self {
            SortKey::Id => return format!("id {}", dir(descending)),
            SortKey::Name => "name",
            SortKey::Status => "status",
            SortKey::CreateTime => "create_time",
            SortKey::StartTime => "start_time",
            SortKey::FinishTime => "finish_time",
        };
        let d = dir(descending);
        format!("{column} {d}, id {d}")
    }
}

impl SortKey {
    /// The columns `order_by` reads.
    fn columns(self) -> &'static str {
        match self {
            SortKey::Id => "id",
            SortKey::Name => "id, name",
            SortKey::Status => "id, status",
            SortKey::CreateTime => "id, create_time",
            SortKey::StartTime => "id, start_time",
            SortKey::FinishTime => "id, finish_time",
        }
    }
}

fn dir(descending: bool) -> &'static str {
    if descending {
        "desc"
    } else {
        "asc"
    }
}

fn push_filter(qb: &mut QueryBuilder<'_, Postgres>, f: &ListFilter) {
    qb.push(" where true");
    if let Some(name) = &f.name {
        let escaped = name
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        qb.push(" and name ilike ")
            .push_bind(format!("%{escaped}%"));
    }
    if !f.statuses.is_empty() {
        let s: Vec<&str> = f.statuses.iter().map(|s| s.as_str()).collect();
        qb.push(" and status = any(").push_bind(s).push(")");
    }
    if let Some(t) = f.task_type {
        qb.push(" and type = ").push_bind(t.as_str());
    }
    if let Some(c) = f.cluster_id {
        qb.push(" and cluster_id = ").push_bind(c);
    }
    if let Some(h) = f.host_id {
        qb.push(" and host_id = ").push_bind(h);
    }
    if let Some(s) = f.server_id {
        qb.push(" and server_id = ").push_bind(s);
    }
    if let Some(c) = &f.creator {
        qb.push(" and creator = ").push_bind(c.clone());
    }
    let ranges = [
        ("create_time >= ", f.create_from),
        ("create_time <= ", f.create_to),
        ("finish_time >= ", f.finish_from),
        ("finish_time <= ", f.finish_to),
    ];
    for (cond, t) in ranges {
        if let Some(t) = t {
            qb.push(" and ").push(cond).push_bind(t);
        }
    }
}

/// Matching tasks are counted exactly up to this many; past it the total
/// is the planner's estimate (never below this bound), flagged as such.
pub const EXACT_COUNT_BOUND: i64 = 10_000;

/// The size of a filtered list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Total {
    pub count: i64,
    /// False when `count` is an estimate (more than `EXACT_COUNT_BOUND`).
    pub exact: bool,
}

/// Counts the matching tasks, exactly up to `bound`, then by estimate.
pub async fn count(conn: &mut PgConnection, f: &ListFilter, bound: i64) -> Result<Total> {
    let mut qb = QueryBuilder::new("select count(*) from (select 1 from task_instance");
    push_filter(&mut qb, f);
    qb.push(" limit ").push_bind(bound + 1).push(") x");
    // Unnamed statements: planned for these values, not a generic plan
    // that cannot tell a rare status or name from a common one.
    let n: i64 = qb
        .build_query_scalar()
        .persistent(false)
        .fetch_one(&mut *conn)
        .await?;
    if n <= bound {
        return Ok(Total {
            count: n,
            exact: true,
        });
    }
    let mut qb = QueryBuilder::new("explain (format json) select 1 from task_instance");
    push_filter(&mut qb, f);
    let plan: Json<serde_json::Value> = qb
        .build_query_scalar()
        .persistent(false)
        .fetch_one(&mut *conn)
        .await?;
    let estimate = plan.0[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0) as i64;
    Ok(Total {
        count: estimate.max(bound + 1),
        exact: false,
    })
}

/// One page of tasks (page is 0-based here) and the total count. The page's
/// ids are read first (from an index in the sort's order, most filters
/// answered by the same index), then only those rows.
pub async fn list(
    conn: &mut PgConnection,
    f: &ListFilter,
    sort: SortKey,
    descending: bool,
    page: i64,
    size: i64,
) -> Result<(Vec<TaskRow>, Total)> {
    let total = count(conn, f, EXACT_COUNT_BOUND).await?;
    let gather = gather_first(f, sort, total);
    let rows = page_query("", f, (sort, descending), gather, page, size)
        .build_query_as()
        .persistent(false)
        .fetch_all(&mut *conn)
        .await?;
    Ok((rows, total))
}

/// Matches at most this many (by the count or its estimate), a time range
/// sorted by another key is read whole through the range's index and then
/// sorted; past it, the sort's index is read in order.
pub const GATHER_BELOW: i64 = 200_000;

/// True when `list` should read all matches of a time range first.
fn gather_first(f: &ListFilter, sort: SortKey, total: Total) -> bool {
    let create = (f.create_from.is_some() || f.create_to.is_some()) && sort != SortKey::CreateTime;
    let finish = (f.finish_from.is_some() || f.finish_to.is_some()) && sort != SortKey::FinishTime;
    (create || finish) && total.count <= GATHER_BELOW
}

fn page_query<'a>(
    prefix: &str,
    f: &'a ListFilter,
    (sort, descending): (SortKey, bool),
    gather_first: bool,
    page: i64,
    size: i64,
) -> QueryBuilder<'a, Postgres> {
    let order = sort.order_by(descending);
    let mut qb = if gather_first {
        // All matches first, through the time range's index, then the
        // page: the planner would otherwise walk the sort's index hoping
        // to meet the range soon, through every newer task when the range
        // is old.
        let mut qb = QueryBuilder::new(format!(
            "{prefix}with p as materialized (select id from (select {} from task_instance",
            sort.columns()
        ));
        push_filter(&mut qb, f);
        // `offset 0` keeps the subquery from being flattened into the page.
        qb.push(" offset 0) m");
        qb
    } else {
        let mut qb = QueryBuilder::new(format!(
            "{prefix}with p as materialized (select id from task_instance"
        ));
        push_filter(&mut qb, f);
        qb
    };
    qb.push(format!(" order by {order} limit "))
        .push_bind(size)
        .push(" offset ")
        .push_bind(page.saturating_mul(size));
    qb.push(format!(
        ") select {COLUMNS} from task_instance where id in (select id from p) order by {order}"
    ));
    qb
}

/// The plan (EXPLAIN, FORMAT JSON) of one page of `list` and of its
/// count, for tests and the bench to check which indexes serve them.
pub async fn explain_list(
    conn: &mut PgConnection,
    f: &ListFilter,
    sort: SortKey,
    descending: bool,
    page: i64,
    size: i64,
) -> Result<(serde_json::Value, serde_json::Value)> {
    let gather = gather_first(f, sort, count(conn, f, EXACT_COUNT_BOUND).await?);
    let page: Json<serde_json::Value> = page_query(
        "explain (format json) ",
        f,
        (sort, descending),
        gather,
        page,
        size,
    )
    .build_query_scalar()
    .persistent(false)
    .fetch_one(&mut *conn)
    .await?;
    let mut qb = QueryBuilder::new(
        "explain (format json) select count(*) from (select 1 from task_instance",
    );
    push_filter(&mut qb, f);
    qb.push(" limit ")
        .push_bind(EXACT_COUNT_BOUND + 1)
        .push(") x");
    let count: Json<serde_json::Value> = qb
        .build_query_scalar()
        .persistent(false)
        .fetch_one(&mut *conn)
        .await?;
    Ok((page.0, count.0))
}

/// The latest `per` tasks (by id) of each target key (`server:{id}`,
/// `host:{id}`), newest first within a key.
pub async fn latest_by_target(
    ex: impl PgExecutor<'_>,
    keys: &[String],
    per: i64,
) -> Result<Vec<TaskRow>> {
    let cols = COLUMNS
        .split(", ")
        .map(|c| format!("t.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "select {cols} from unnest($1::text[]) as k (key) cross join lateral ( \
             select * from task_instance i where i.target_key = k.key order by i.id desc limit $2 \
         ) t order by t.target_key, t.id desc"
    );
    Ok(sqlx::query_as(&sql)
        .bind(keys)
        .bind(per)
        .fetch_all(ex)
        .await?)
}
