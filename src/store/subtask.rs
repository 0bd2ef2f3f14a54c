//! SQL of the `subtask_instance` aggregate and its DAG edges: claim,
//! fenced run endings, promotion counters and the sweeper's queries.

use super::Result;
use crate::model::transitions::StatusCounts;
use crate::model::{Context, SubtaskOperation, SubtaskStatus, TaskId};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use std::collections::HashMap;

/// The separator line that opens a run's log: `'… run N of name on
/// {executor} at {time} …'`, as a SQL expression over the run's row, with the
/// executor given as a bind parameter (`"$1"`).
macro_rules! separator_line {
    ($executor:literal) => {
        concat!(
            "'==================== ' || operation || ' run ' || run_time || ' of ' || name \
             || ' on ' || ",
            $executor,
            " || ' at ' \
             || to_char(now() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') \
             || ' ===================='"
        )
    };
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubtaskRow {
    pub id: i64,
    pub task_id: i64,
    pub series_id: i32,
    pub name: String,
    pub description: String,
    pub class_name: String,
    pub node_type: String,
    #[sqlx(try_from = "String")]
    pub status: SubtaskStatus,
    #[sqlx(try_from = "String")]
    pub operation: SubtaskOperation,
    pub run_time: i32,
    pub timeout_s: i32,
    pub retry_limit: i32,
    pub parallel_idx: i32,
    pub prohibit_rollback: bool,
    pub pending_upstreams: i32,
    pub pending_downstreams: i32,
    pub context: Option<Json<Context>>,
    pub executor: Option<String>,
    pub run_after: Option<DateTime<Utc>>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub start_time: Option<DateTime<Utc>>,
    pub finish_time: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

const COLUMNS: &str = "id, task_id, series_id, name, description, class_name, node_type, status, \
     operation, run_time, timeout_s, retry_limit, parallel_idx, prohibit_rollback, \
     pending_upstreams, pending_downstreams, context, executor, run_after, lease_expires_at, \
     start_time, finish_time, error";

pub async fn get(ex: impl PgExecutor<'_>, id: i64) -> Result<Option<SubtaskRow>> {
    let sql = format!("select {COLUMNS} from subtask_instance where id = $1");
    Ok(sqlx::query_as(&sql).bind(id).fetch_optional(ex).await?)
}

pub async fn list_for_task(ex: impl PgExecutor<'_>, task: TaskId) -> Result<Vec<SubtaskRow>> {
    let sql =
        format!("select {COLUMNS} from subtask_instance where task_id = $1 order by series_id");
    Ok(sqlx::query_as(&sql).bind(task.0).fetch_all(ex).await?)
}

/// Subtasks of many tasks at once, for list pages.
pub async fn list_for_tasks(ex: impl PgExecutor<'_>, tasks: &[i64]) -> Result<Vec<SubtaskRow>> {
    let sql = format!(
        "select {COLUMNS} from subtask_instance where task_id = any($1) order by task_id, series_id"
    );
    Ok(sqlx::query_as(&sql).bind(tasks).fetch_all(ex).await?)
}

/// (upstream_id, downstream_id) pairs of the given tasks' DAGs.
pub async fn edges_for_tasks(ex: impl PgExecutor<'_>, tasks: &[i64]) -> Result<Vec<(i64, i64)>> {
    Ok(sqlx::query_as(
        // Index lookups per task and per subtask (`offset 0` keeps the
        // laterals from being flattened into a scan of every edge).
        "select x.upstream_id, x.downstream_id from unnest($1::bigint[]) as t(id) \
         cross join lateral (select s.id from subtask_instance s \
             where s.task_id = t.id offset 0) s \
         cross join lateral (select e.upstream_id, e.downstream_id from subtask_edge e \
             where e.downstream_id = s.id offset 0) x \
         order by x.upstream_id, x.downstream_id",
    )
    .bind(tasks)
    .fetch_all(ex)
    .await?)
}

/// A run handed to a worker by the claim.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub task_id: i64,
    pub name: String,
    pub class_name: String,
    #[sqlx(try_from = "String")]
    pub operation: SubtaskOperation,
    pub run_time: i32,
    pub retry_limit: i32,
    pub timeout_s: i32,
    pub parallel_idx: i32,
    pub context: Json<Context>,
    pub trace_id: String,
    /// Seconds from READY to this claim.
    pub handoff_s: f64,
}

/// Claims up to `limit` READY subtasks whose backoff has passed, in one
/// statement: lock them with SKIP LOCKED (served by the partial index on
/// READY rows), mark them RUNNING for `executor`, and write each run's
/// opening separator line to its log.
pub async fn claim(ex: impl PgExecutor<'_>, executor: &str, limit: i64) -> Result<Vec<Claimed>> {
    Ok(sqlx::query_as(concat!(
        "with c as materialized ( \
             select id from subtask_instance \
             where status = 'READY' and run_after <= now() \
             order by run_after \
             limit $2 \
             for update skip locked \
         ), u as ( \
             update subtask_instance s \
             set status = 'RUNNING', executor = $1, start_time = now(), finish_time = null, \
                 error = null, \
                 lease_expires_at = now() + make_interval(secs => s.timeout_s) \
             from c, task_instance t \
             where s.id = c.id and t.id = s.task_id \
             returning s.id, s.task_id, s.name, s.class_name, s.operation, s.run_time, \
                 s.retry_limit, s.timeout_s, s.parallel_idx, s.context, t.trace_id, \
                 extract(epoch from now() - s.run_after)::float8 as handoff_s \
         ), l as ( \
             insert into subtask_log (subtask_id, run_time, line) \
             select id, run_time, ",
        separator_line!("$1"),
        " \
             from u \
         ) \
         select id, task_id, name, class_name, operation, run_time, retry_limit, timeout_s, \
             parallel_idx, context, trace_id, handoff_s from u",
    ))
    .bind(executor)
    .bind(limit)
    .fetch_all(ex)
    .await?)
}

/// The RUNNING or CANCELING runs `executor` holds, as the claim returns
/// them: what a worker reads back after a commit whose reply it lost.
pub async fn held_by(ex: impl PgExecutor<'_>, executor: &str) -> Result<Vec<Claimed>> {
    Ok(sqlx::query_as(
        "select s.id, s.task_id, s.name, s.class_name, s.operation, s.run_time, \
             s.retry_limit, s.timeout_s, s.parallel_idx, \
             coalesce(s.context, '{}'::jsonb) as context, t.trace_id, 0::float8 as handoff_s \
         from subtask_instance s join task_instance t on t.id = s.task_id \
         where s.executor = $1 and s.status in ('RUNNING', 'CANCELING') \
         order by s.id",
    )
    .bind(executor)
    .fetch_all(ex)
    .await?)
}

/// Identifies one run: the fence every run ending is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunKey {
    pub id: i64,
    pub run_time: i32,
    pub executor: String,
}

/// How a run ends.
#[derive(Debug, Clone)]
pub struct RunEnd {
    pub status: SubtaskStatus,
    pub operation: SubtaskOperation,
    pub run_time: i32,
    /// Replaces the stored context when set.
    pub context: Option<Context>,
    pub error: Option<String>,
    /// For READY: not before this many milliseconds.
    pub backoff_ms: i64,
}

/// The run endings as parallel arrays, one per unnest column.
struct RunColumns<'a> {
    ids: Vec<i64>,
    rts: Vec<i32>,
    exs: Vec<&'a str>,
    sts: Vec<&'static str>,
    ops: Vec<&'static str>,
    nrts: Vec<i32>,
    ctxs: Vec<Option<Json<&'a Context>>>,
    errs: Vec<Option<&'a str>>,
    bos: Vec<f64>,
}

impl<'a> RunColumns<'a> {
    fn of(runs: &'a [(RunKey, RunEnd)]) -> Self {
        let mut c = RunColumns {
            ids: Vec::with_capacity(runs.len()),
            rts: Vec::with_capacity(runs.len()),
            exs: Vec::with_capacity(runs.len()),
            sts: Vec::with_capacity(runs.len()),
            ops: Vec::with_capacity(runs.len()),
            nrts: Vec::with_capacity(runs.len()),
            ctxs: Vec::with_capacity(runs.len()),
            errs: Vec::with_capacity(runs.len()),
            bos: Vec::with_capacity(runs.len()),
        };
        for (k, e) in runs {
            c.ids.push(k.id);
            c.rts.push(k.run_time);
            c.exs.push(k.executor.as_str());
            c.sts.push(e.status.as_str());
            c.ops.push(e.operation.as_str());
            c.nrts.push(e.run_time);
            c.ctxs.push(e.context.as_ref().map(Json));
            c.errs.push(e.error.as_deref());
            c.bos.push(e.backoff_ms as f64);
        }
        c
    }
}

/// A task whose waiting subtasks `end_and_promote` may start: RUNNING, not
/// rolling back, locked by the caller.
#[derive(Debug, Clone, Copy)]
pub struct Promotable {
    pub task_id: i64,
    pub max_concurrency: i32,
}

/// Which of its three parts a row of `end_and_promote` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedKind {
    /// A run whose end was written (`'end'` in the statement).
    End,
    /// A promotable task's standing afterwards (`'task'`).
    Task,
    /// A subtask made READY or RUNNING (`'up'`).
    Up,
}

impl TryFrom<String> for EndedKind {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        match s.as_str() {
            "end" => Ok(EndedKind::End),
            "task" => Ok(EndedKind::Task),
            "up" => Ok(EndedKind::Up),
            _ => Err(format!("unknown row kind {s:?} from the finish statement")),
        }
    }
}

/// What `end_and_promote` did, row by row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Ended {
    #[sqlx(try_from = "String")]
    pub kind: EndedKind,
    pub id: i64,
    pub task_id: i64,
    /// `end`/`up`: the row's new status.
    pub status: Option<String>,
    /// `task`: subtasks READY, RUNNING or CANCELING once the statement is
    /// done.
    pub active: Option<i64>,
    /// `task`: subtasks chosen within the free slots whose several upstreams'
    /// contexts must be merged by the caller (left PENDING).
    pub merges: Option<i64>,
    /// `up` rows that became RUNNING: the run's columns, as the claim
    /// returns them.
    pub name: Option<String>,
    pub class_name: Option<String>,
    pub operation: Option<String>,
    pub run_time: Option<i32>,
    pub retry_limit: Option<i32>,
    pub timeout_s: Option<i32>,
    pub parallel_idx: Option<i32>,
    pub context: Option<Json<Context>>,
    pub trace_id: Option<String>,
}

impl Ended {
    /// The run to start, for an `up` row that became RUNNING.
    pub fn into_run(self) -> Result<Option<Claimed>> {
        if self.kind != EndedKind::Up || self.status.as_deref() != Some("RUNNING") {
            return Ok(None);
        }
        let missing = || super::Error::Corrupt(format!("started run {} lacks a column", self.id));
        Ok(Some(Claimed {
            id: self.id,
            task_id: self.task_id,
            name: self.name.clone().ok_or_else(missing)?,
            class_name: self.class_name.clone().ok_or_else(missing)?,
            operation: super::parse(self.operation.as_deref().ok_or_else(missing)?)?,
            run_time: self.run_time.ok_or_else(missing)?,
            retry_limit: self.retry_limit.ok_or_else(missing)?,
            timeout_s: self.timeout_s.ok_or_else(missing)?,
            parallel_idx: self.parallel_idx.ok_or_else(missing)?,
            context: self.context.clone().ok_or_else(missing)?,
            trace_id: self.trace_id.clone().ok_or_else(missing)?,
            handoff_s: 0.0,
        }))
    }
}

/// Ends runs, each fenced on (id, run_time, executor, RUNNING|CANCELING),
/// writes the error of each failed run as the last line of that run's log,
/// and in the same statement counts down
/// the downstreams of the successful ones and starts, within each
/// promotable task's free slots and in series order, the waiting subtasks
/// with at most one upstream: a root takes the task's context, any other
/// node its upstream's (stored deduplicated, so this is the merge of one).
/// The first `direct` of them become RUNNING for `executor` at once (the
/// finishing worker runs them without a claim), the rest READY. Subtasks
/// with several upstreams keep their slot but are left PENDING for the
/// caller to merge. Each row is written once: a downstream's countdown and
/// its promotion are one row version.
pub async fn end_and_promote(
    conn: &mut PgConnection,
    runs: &[(RunKey, RunEnd)],
    tasks: &[Promotable],
    executor: &str,
    direct: i64,
) -> Result<Vec<Ended>> {
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let cols = RunColumns::of(runs);
    let task_ids: Vec<i64> = tasks.iter().map(|t| t.task_id).collect();
    let max_conc: Vec<i32> = tasks.iter().map(|t| t.max_concurrency).collect();
    // Plans must not depend on fresh statistics (generic plans, tables
    // that just grew): every lookup is a lateral `offset 0` probe of an
    // index, CTEs are combined by union and window rather than joined, and
    // the fence (RUNNING or CANCELING, spelled as the other statuses
    // excluded) does not imply the predicate of the index on running rows
    // by executor, so no plan scans all the worker's runs per run: only the
    // primary key can find a run, in one probe.
    Ok(sqlx::query_as(concat!(
        "with v as materialized ( \
             select * from unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[], \
                 $6::int[], $7::jsonb[], $8::text[], $9::float8[]) \
                 as v(id, rt, ex, st, op, nrt, ctx, err, bo) \
         ), e as ( \
             update subtask_instance s \
             set status = v.st, operation = v.op, run_time = v.nrt, \
                 context = coalesce(v.ctx, s.context), error = v.err, \
                 run_after = case when v.st = 'READY' \
                     then now() + make_interval(secs => v.bo / 1000) else s.run_after end, \
                 finish_time = case when v.st = 'READY' then s.finish_time else now() end, \
                 executor = null, lease_expires_at = null \
             from v \
             where s.id = v.id and s.run_time = v.rt \
               and s.executor = v.ex \
               and s.status not in ('PENDING', 'READY', 'FAILED', 'SUCCESSFUL') \
             returning s.id, s.task_id, s.status, s.context \
         ), el as ( \
             insert into subtask_log (subtask_id, run_time, line) \
             select v.id, v.rt, '[ERROR] run ' || v.rt || ' failed: ' || v.err \
             from v join e on e.id = v.id where v.err is not null \
         ), t as materialized ( \
             select t.id, t.max_conc, ti.active \
             from unnest($10::bigint[], $11::int[]) as t(id, max_conc) \
             cross join lateral (select ti.active from task_instance ti \
                 where ti.id = t.id offset 0) ti \
         ), dec as ( \
             select d.downstream_id as id, count(*)::int as n, (array_agg(e.context))[1] as upctx \
             from e cross join lateral (select ed.downstream_id from subtask_edge ed \
                 where ed.upstream_id = e.id offset 0) d \
             where e.status = 'SUCCESSFUL' \
             group by d.downstream_id \
         ), pool as ( \
             select t.id as task_id, 'cap' as kind, 0::bigint as id, 0 as series_id, \
                 0 as parallel_idx, null::jsonb as upctx, (t.max_conc - t.active)::bigint as amount, \
                 t.active::bigint as a \
             from t \
             union all \
             select e.task_id, 'freed', 0, 0, 0, null, 1, -1 from e where e.status <> 'READY' \
             union all \
             select d.task_id, 'cand', d.id, d.series_id, d.parallel_idx, dec.upctx, 0, 0 \
             from dec cross join lateral (select s.id, s.task_id, s.series_id, s.parallel_idx \
                 from subtask_instance s \
                 where s.id = dec.id and s.status = 'PENDING' \
                   and s.operation in ('EXECUTE', 'RETRY') \
                   and s.pending_upstreams between 1 and dec.n offset 0) d \
             union all \
             select t.id, 'cand', w.id, w.series_id, w.parallel_idx, null, 0, 0 \
             from t cross join lateral (select s.id, s.series_id, s.parallel_idx \
                 from subtask_instance s \
                 where s.task_id = t.id and s.status = 'PENDING' and s.pending_upstreams = 0 \
                   and s.operation in ('EXECUTE', 'RETRY') \
                 order by s.series_id \
                 limit least(t.max_conc, greatest(t.max_conc - t.active, 0) + $14)) w \
         ), ranked as ( \
             select p.*, sum(p.amount) over (partition by p.task_id) as free, \
                 bool_or(p.kind = 'cap') over (partition by p.task_id) as promotable, \
                 row_number() over (partition by p.task_id, p.kind order by p.series_id) as rn \
             from pool p \
         ), chosen as ( \
             select r.task_id, r.id, r.series_id, r.parallel_idx, r.upctx, up.nup \
             from ranked r \
             cross join lateral (select count(*) as nup from subtask_edge ed \
                 where ed.downstream_id = r.id) up \
             where r.kind = 'cand' and r.promotable and r.rn <= r.free \
         ), promo as ( \
             select ch.id, ch.task_id, \
                 case when ch.nup = 0 \
                     then (select ti.context from task_instance ti where ti.id = ch.task_id) \
                     else coalesce(ch.upctx, \
                         (select (select u.context from subtask_instance u \
                                  where u.id = ed.upstream_id) \
                          from subtask_edge ed where ed.downstream_id = ch.id limit 1), \
                         '{}'::jsonb) \
                 end || jsonb_build_object('parallel', ch.parallel_idx >= 0, \
                                           'parallelIdx', ch.parallel_idx) as ctx, \
                 row_number() over (order by ch.task_id, ch.series_id) as k \
             from chosen ch \
             where ch.nup <= 1 \
         ), upd as ( \
             update subtask_instance d \
             set pending_upstreams = greatest(d.pending_upstreams - coalesce(x.n, 0), 0), \
                 status = case when x.k is null then d.status \
                     when x.k <= $13 then 'RUNNING' else 'READY' end, \
                 context = coalesce(x.ctx, d.context), \
                 run_after = case when x.k is null then d.run_after \
                     when x.k <= $13 then now() else clock_timestamp() end, \
                 executor = case when x.k <= $13 then $12 end, \
                 lease_expires_at = case when x.k <= $13 \
                     then now() + make_interval(secs => d.timeout_s) end, \
                 start_time = case when x.k <= $13 then now() else d.start_time end, \
                 finish_time = case when x.k is null then d.finish_time end, \
                 error = case when x.k is null then d.error end \
             from (select coalesce(dec.id, promo.id) as id, dec.n, promo.k, promo.ctx \
                   from dec full join promo on promo.id = dec.id) x \
             where d.id = x.id and d.status = 'PENDING' \
             returning d.id, d.task_id, d.status, d.name, d.class_name, d.operation, d.run_time, \
                 d.retry_limit, d.timeout_s, d.parallel_idx, d.context \
         ), l as ( \
             insert into subtask_log (subtask_id, run_time, line) \
             select id, run_time, ",
        separator_line!("$12"),
        " \
             from upd where status = 'RUNNING' \
         ) \
         select 'end' as kind, e.id, e.task_id, e.status, null::bigint as active, \
             null::bigint as merges, null::text as name, null::text as class_name, \
             null::text as operation, null::int as run_time, null::int as retry_limit, \
             null::int as timeout_s, null::int as parallel_idx, null::jsonb as context, \
             null::text as trace_id, null::float8 as handoff_s \
         from e \
         union all \
         select 'task', 0, x.task_id, null, sum(x.a)::bigint, sum(x.m)::bigint, \
             null, null, null, null, null, null, null, null, null, null \
         from ( \
             select task_id, a, 0 as m from ranked where promotable and kind <> 'cand' \
             union all select task_id, 1, 0 from promo \
             union all select task_id, 0, 1 from chosen where nup > 1 \
         ) x group by x.task_id \
         union all \
         select 'up', u.id, u.task_id, u.status, null, null, u.name, u.class_name, u.operation, \
             u.run_time, u.retry_limit, u.timeout_s, u.parallel_idx, u.context, \
             case when u.status = 'RUNNING' \
                 then (select ti.trace_id from task_instance ti where ti.id = u.task_id) end, \
             0::float8 \
         from upd u where u.status <> 'PENDING'",
    ))
    .bind(&cols.ids)
    .bind(&cols.rts)
    .bind(&cols.exs)
    .bind(&cols.sts)
    .bind(&cols.ops)
    .bind(&cols.nrts)
    .bind(&cols.ctxs)
    .bind(&cols.errs)
    .bind(&cols.bos)
    .bind(&task_ids)
    .bind(&max_conc)
    .bind(executor)
    .bind(direct)
    .bind(runs.len() as i64)
    .fetch_all(conn)
    .await?)
}

/// One successful upstream less for each PENDING downstream of `ids`
/// (counted once per finished upstream, even when several share it).
pub async fn decrement_downstreams(conn: &mut PgConnection, ids: &[i64]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "update subtask_instance d \
         set pending_upstreams = greatest(d.pending_upstreams - x.n, 0) \
         from (select downstream_id, count(*)::int as n from subtask_edge \
               where upstream_id = any($1) group by downstream_id) x \
         where d.id = x.downstream_id and d.status = 'PENDING'",
    )
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts of the given tasks' subtasks by status.
pub async fn status_counts(
    conn: &mut PgConnection,
    tasks: &[i64],
) -> Result<HashMap<i64, StatusCounts>> {
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "select task_id, status, count(*) from subtask_instance \
         where task_id = any($1) group by task_id, status",
    )
    .bind(tasks)
    .fetch_all(conn)
    .await?;
    let mut counts: HashMap<i64, StatusCounts> = HashMap::new();
    for (task, s, n) in rows {
        counts.entry(task).or_default().add(super::parse(&s)?, n);
    }
    Ok(counts)
}

/// A PENDING subtask whose upstreams are all done, waiting for a slot.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Waiting {
    pub id: i64,
    pub task_id: i64,
    pub parallel_idx: i32,
}

/// Up to `free` waiting subtasks of each (task, free) pair, in series order.
pub async fn waiting_for_slots(
    conn: &mut PgConnection,
    tasks: &[i64],
    free: &[i64],
) -> Result<Vec<Waiting>> {
    Ok(sqlx::query_as(
        // A lateral index scan per task: a join against the unnest would
        // let a generic plan scan the whole table, history included.
        "select w.id, v.task_id, w.parallel_idx \
         from unnest($1::bigint[], $2::bigint[]) as v(task_id, free) \
         cross join lateral ( \
             select s.id, s.parallel_idx, s.series_id from subtask_instance s \
             where s.task_id = v.task_id and s.status = 'PENDING' and s.pending_upstreams = 0 \
               and s.operation in ('EXECUTE', 'RETRY') \
             order by s.series_id limit v.free \
         ) w order by v.task_id, w.series_id",
    )
    .bind(tasks)
    .bind(free)
    .fetch_all(conn)
    .await?)
}

/// The stored contexts of the upstreams of each of `ids`, as
/// (downstream_id, context) in upstream series order.
pub async fn upstream_contexts(
    conn: &mut PgConnection,
    ids: &[i64],
) -> Result<Vec<(i64, Option<Json<Context>>)>> {
    Ok(sqlx::query_as(
        // Lateral per downstream (`offset 0` keeps it from being flattened),
        // so that even a generic plan with stale statistics looks the
        // upstreams up by index instead of hashing the whole table.
        "select d.id, x.context from unnest($1::bigint[]) as d(id) \
         cross join lateral ( \
             select u.context, u.series_id from subtask_edge e \
             join subtask_instance u on u.id = e.upstream_id \
             where e.downstream_id = d.id offset 0 \
         ) x order by d.id, x.series_id",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?)
}

/// Makes PENDING subtasks READY now with their input contexts.
pub async fn make_ready(conn: &mut PgConnection, ids: &[i64], contexts: &[Context]) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let ctx: Vec<Json<&Context>> = contexts.iter().map(Json).collect();
    let done = sqlx::query(
        "update subtask_instance s set status = 'READY', run_after = clock_timestamp(), context = v.ctx \
         from unnest($1::bigint[], $2::jsonb[]) as v(id, ctx) \
         where s.id = v.id and s.status = 'PENDING'",
    )
    .bind(ids)
    .bind(&ctx)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Fails a PENDING subtask that cannot run (its inputs conflict).
pub async fn fail_pending(conn: &mut PgConnection, id: i64, error: &str) -> Result<()> {
    sqlx::query(
        "update subtask_instance set status = 'FAILED', error = $2, finish_time = now() \
         where id = $1 and status = 'PENDING'",
    )
    .bind(id)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// FAILED subtasks of a task (or just `only`) become PENDING/RETRY with the
/// next run_time, to be promoted within the concurrency limit.
pub async fn requeue_failed(
    conn: &mut PgConnection,
    task: TaskId,
    only: Option<i64>,
) -> Result<u64> {
    let done = sqlx::query(
        "update subtask_instance set status = 'PENDING', operation = 'RETRY', \
             run_time = run_time + 1, error = null \
         where task_id = $1 and status = 'FAILED' and ($2::bigint is null or id = $2)",
    )
    .bind(task.0)
    .bind(only)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// True when a started subtask of the task forbids rollback.
pub async fn rollback_prohibited(conn: &mut PgConnection, task: TaskId) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from subtask_instance \
             where task_id = $1 and prohibit_rollback and start_time is not null)",
    )
    .bind(task.0)
    .fetch_one(conn)
    .await?)
}

/// Starts (or resumes) a rollback: every subtask that ran takes operation
/// ROLLBACK and counts its downstreams still to undo; those with none left
/// are queued for their turn (`rollback_queued`), to become READY within the
/// concurrency limit ([`rollback_turns`]). Failed subtasks that never
/// started need no undoing and go straight back to PENDING. Returns how
/// many were queued.
pub async fn start_rollback(conn: &mut PgConnection, task: TaskId) -> Result<u64> {
    sqlx::query(
        "update subtask_instance set status = 'PENDING', operation = 'ROLLBACK' \
         where task_id = $1 and status = 'FAILED' and start_time is null",
    )
    .bind(task.0)
    .execute(&mut *conn)
    .await?;
    let queued: Vec<bool> = sqlx::query_scalar(
        "update subtask_instance s set operation = 'ROLLBACK', \
             pending_downstreams = x.n, \
             rollback_queued = x.n = 0 and s.status in ('SUCCESSFUL', 'FAILED') \
         from (select s.id, (select count(*) from subtask_edge e \
                   join subtask_instance d on d.id = e.downstream_id \
                   where e.upstream_id = s.id and d.status <> 'PENDING')::int as n \
               from subtask_instance s where s.task_id = $1 and s.status <> 'PENDING') x \
         where s.id = x.id \
         returning s.rollback_queued",
    )
    .bind(task.0)
    .fetch_all(&mut *conn)
    .await?;
    Ok(queued.iter().filter(|q| **q).count() as u64)
}

/// After `id` was rolled back (or rollback-skipped): its upstreams have one
/// downstream less to wait for; those with none left are queued for their
/// rollback turn. Returns how many were queued.
pub async fn rollback_upstreams(conn: &mut PgConnection, id: i64) -> Result<u64> {
    let queued: Vec<bool> = sqlx::query_scalar(
        "update subtask_instance u \
         set pending_downstreams = u.pending_downstreams - 1, \
             rollback_queued = u.pending_downstreams = 1 \
         from subtask_edge e \
         where e.downstream_id = $1 and u.id = e.upstream_id \
           and u.status in ('SUCCESSFUL', 'FAILED') and u.operation = 'ROLLBACK' \
           and u.pending_downstreams > 0 \
         returning u.rollback_queued",
    )
    .bind(id)
    .fetch_all(conn)
    .await?;
    Ok(queued.iter().filter(|q| **q).count() as u64)
}

/// Up to `free` subtasks queued for their rollback turn of each (task,
/// free) pair, the last in series order first, as (id, task_id, run_time).
pub async fn queued_rollbacks(
    conn: &mut PgConnection,
    tasks: &[i64],
    free: &[i64],
) -> Result<Vec<(i64, i64, i32)>> {
    Ok(sqlx::query_as(
        // Read from the partial index on queued rows, per task.
        "select w.id, v.task_id, w.run_time \
         from unnest($1::bigint[], $2::bigint[]) as v(task_id, free) \
         cross join lateral ( \
             select s.id, s.run_time, s.series_id from subtask_instance s \
             where s.task_id = v.task_id and s.rollback_queued \
             order by s.series_id desc limit v.free \
         ) w order by v.task_id, w.series_id desc",
    )
    .bind(tasks)
    .bind(free)
    .fetch_all(conn)
    .await?)
}

/// Queued rollbacks take their turn: READY now with the next run_time,
/// fenced on (id, run_time, queued). Returns the task of each one made
/// READY.
pub async fn take_rollback_turns(
    conn: &mut PgConnection,
    ids: &[i64],
    run_times: &[i32],
) -> Result<Vec<i64>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(
        "update subtask_instance s set status = 'READY', run_time = s.run_time + 1, \
             run_after = now(), error = null, rollback_queued = false \
         from unnest($1::bigint[], $2::int[]) as v(id, rt) \
         where s.id = v.id and s.run_time = v.rt and s.rollback_queued \
           and s.status in ('SUCCESSFUL', 'FAILED') and s.operation = 'ROLLBACK' \
         returning s.task_id",
    )
    .bind(ids)
    .bind(run_times)
    .fetch_all(conn)
    .await?)
}

/// Skips a FAILED subtask: it takes `status`/`operation` without running.
pub async fn skip(
    conn: &mut PgConnection,
    id: i64,
    status: SubtaskStatus,
    operation: SubtaskOperation,
) -> Result<bool> {
    let done = sqlx::query(
        "update subtask_instance set status = $2, operation = $3, finish_time = now(), \
             error = null \
         where id = $1 and status = 'FAILED'",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(operation.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// RUNNING → CANCELING; returns the executor to tell.
pub async fn mark_canceling(conn: &mut PgConnection, id: i64) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "update subtask_instance set status = 'CANCELING' \
         where id = $1 and status = 'RUNNING' returning executor",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// READY → FAILED/CANCEL: a subtask cancelled before any worker claimed
/// it (a retry waiting out its backoff). False when it was claimed first.
pub async fn cancel_ready(conn: &mut PgConnection, id: i64) -> Result<bool> {
    let done = sqlx::query(
        "update subtask_instance set status = 'FAILED', operation = 'CANCEL', \
             error = 'subtask canceled', finish_time = now() \
         where id = $1 and status = 'READY'",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Subtasks this worker holds that were asked to cancel.
pub async fn canceling_for(ex: impl PgExecutor<'_>, executor: &str) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "select id from subtask_instance where executor = $1 and status = 'CANCELING'",
    )
    .bind(executor)
    .fetch_all(ex)
    .await?)
}

/// Those of `ids` whose cancel was requested (CANCELING).
pub async fn canceling_among(conn: &mut PgConnection, ids: &[i64]) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "select s.id from unnest($1::bigint[]) as v(id) \
         cross join lateral (select id, status from subtask_instance \
             where id = v.id offset 0) s \
         where s.status = 'CANCELING'",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?)
}

/// Hands a run back unchanged (shutdown): READY at once, same run_time.
pub async fn release(conn: &mut PgConnection, run: &RunKey) -> Result<bool> {
    let done = sqlx::query(
        "update subtask_instance set status = 'READY', run_after = clock_timestamp(), executor = null, \
             lease_expires_at = null \
         where id = $1 and run_time = $2 and executor = $3 and status = 'RUNNING'",
    )
    .bind(run.id)
    .bind(run.run_time)
    .bind(&run.executor)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A run the sweeper must recover.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LostRun {
    pub id: i64,
    pub task_id: i64,
    pub run_time: i32,
    pub retry_limit: i32,
    pub class_name: String,
    pub executor: String,
    #[sqlx(try_from = "String")]
    pub status: SubtaskStatus,
    #[sqlx(try_from = "String")]
    pub operation: SubtaskOperation,
    /// True when its worker is gone; false when only its timeout passed.
    pub worker_gone: bool,
}

/// RUNNING or CANCELING runs whose executor has no worker row (it was
/// declared dead, or stopped without handing them back), or whose timeout
/// passed more than `grace_ms` ago.
pub async fn find_lost(ex: impl PgExecutor<'_>, grace_ms: i64, limit: i64) -> Result<Vec<LostRun>> {
    Ok(sqlx::query_as(
        "select s.id, s.task_id, s.run_time, s.retry_limit, s.class_name, s.executor, s.status, \
             s.operation, w.id is null as worker_gone \
         from subtask_instance s \
         left join worker w on w.id = s.executor \
         where s.status in ('RUNNING', 'CANCELING') \
           and (w.id is null \
                or s.lease_expires_at < now() - make_interval(secs => $1::float8 / 1000)) \
         order by s.id limit $2",
    )
    .bind(grace_ms as f64)
    .bind(limit)
    .fetch_all(ex)
    .await?)
}

/// The RUNNING or CANCELING runs of one worker, in task order (the order
/// their task rows are locked in).
pub async fn runs_of(conn: &mut PgConnection, executor: &str) -> Result<Vec<LostRun>> {
    Ok(sqlx::query_as(
        "select s.id, s.task_id, s.run_time, s.retry_limit, s.class_name, s.executor, s.status, \
             s.operation, true as worker_gone \
         from subtask_instance s \
         where s.executor = $1 and s.status in ('RUNNING', 'CANCELING') \
         order by s.task_id, s.id",
    )
    .bind(executor)
    .fetch_all(conn)
    .await?)
}

/// Takes the sweeper's claim on one run for this transaction, without
/// waiting: false when another sweeper pass holds it now.
pub async fn try_own_for_sweep(conn: &mut PgConnection, id: i64) -> Result<bool> {
    Ok(
        sqlx::query_scalar("select pg_try_advisory_xact_lock($1, ($2 % 2147483647)::int)")
            .bind(SWEEP_LOCK_CLASS)
            .bind(id)
            .fetch_one(conn)
            .await?,
    )
}

/// The advisory-lock class of the sweeper's per-run claims (`'swep'`).
const SWEEP_LOCK_CLASS: i32 = 0x7377_6570;

/// Number of READY subtasks (for the queue-depth gauge).
pub async fn ready_count(ex: impl PgExecutor<'_>) -> Result<i64> {
    Ok(
        sqlx::query_scalar("select count(*) from subtask_instance where status = 'READY'")
            .fetch_one(ex)
            .await?,
    )
}
