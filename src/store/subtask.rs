//! SQL of the `subtask_instance` aggregate and its DAG edges: the row and
//! its reads, fenced run endings and promotion (here); the worker's claim
//! ([`claim`]), the user actions ([`control`]) and the sweeper's queries
//! ([`sweep`]) in their own files, re-exported so callers name them all
//! `store::subtask::…`.

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

mod claim;
mod control;
mod sweep;

pub use claim::{canceling_among, canceling_for, claim, held_by, release, Claimed};
pub use control::{
    cancel_ready, mark_canceling, queued_rollbacks, requeue_failed, rollback_prohibited,
    rollback_upstreams, skip, start_rollback, take_rollback_turns,
};
pub use sweep::{find_lost, runs_of, try_own_for_sweep, LostRun};

#[derive(Debug, Clone)]
pub struct SubtaskRow {
    pub id: i64,
    pub task_id: i64,
    pub series_id: i32,
    pub name: String,
    pub description: String,
    pub class_name: String,
    pub node_type: String,
    pub status: SubtaskStatus,
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

pub async fn get(ex: impl PgExecutor<'_>, id: i64) -> Result<Option<SubtaskRow>> {
    Ok(sqlx::query_as!(
        SubtaskRow,
        r#"select id, task_id, series_id, name, description, class_name, node_type,
               status as "status: SubtaskStatus", operation as "operation: SubtaskOperation",
               run_time, timeout_s, retry_limit, parallel_idx, prohibit_rollback,
               pending_upstreams, pending_downstreams, context as "context: Json<Context>",
               executor, run_after, lease_expires_at, start_time, finish_time, error
           from subtask_instance where id = $1"#,
        id
    )
    .fetch_optional(ex)
    .await?)
}

pub async fn list_for_task(ex: impl PgExecutor<'_>, task: TaskId) -> Result<Vec<SubtaskRow>> {
    Ok(sqlx::query_as!(
        SubtaskRow,
        r#"select id, task_id, series_id, name, description, class_name, node_type,
               status as "status: SubtaskStatus", operation as "operation: SubtaskOperation",
               run_time, timeout_s, retry_limit, parallel_idx, prohibit_rollback,
               pending_upstreams, pending_downstreams, context as "context: Json<Context>",
               executor, run_after, lease_expires_at, start_time, finish_time, error
           from subtask_instance where task_id = $1 order by series_id"#,
        task.0,
    )
    .fetch_all(ex)
    .await?)
}

/// Subtasks of many tasks at once, for list pages.
pub async fn list_for_tasks(ex: impl PgExecutor<'_>, tasks: &[i64]) -> Result<Vec<SubtaskRow>> {
    Ok(sqlx::query_as!(
        SubtaskRow,
        r#"select id, task_id, series_id, name, description, class_name, node_type,
               status as "status: SubtaskStatus", operation as "operation: SubtaskOperation",
               run_time, timeout_s, retry_limit, parallel_idx, prohibit_rollback,
               pending_upstreams, pending_downstreams, context as "context: Json<Context>",
               executor, run_after, lease_expires_at, start_time, finish_time, error
           from subtask_instance where task_id = any($1) order by task_id, series_id"#,
        tasks,
    )
    .fetch_all(ex)
    .await?)
}

/// (upstream_id, downstream_id) pairs of the given tasks' DAGs.
pub async fn edges_for_tasks(ex: impl PgExecutor<'_>, tasks: &[i64]) -> Result<Vec<(i64, i64)>> {
    // Index lookups per task and per subtask (`offset 0` keeps the
    // laterals from being flattened into a scan of every edge).
    let rows = sqlx::query!(
        "select x.upstream_id as \"up!\", x.downstream_id as \"down!\" \
         from unnest($1::bigint[]) as t(id) \
         cross join lateral (select s.id from subtask_instance s \
             where s.task_id = t.id offset 0) s \
         cross join lateral (select e.upstream_id, e.downstream_id from subtask_edge e \
             where e.downstream_id = s.id offset 0) x \
         order by x.upstream_id, x.downstream_id",
        tasks,
    )
    .fetch_all(ex)
    .await?;
    Ok(rows.into_iter().map(|r| (r.up, r.down)).collect())
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
/// Number of READY subtasks (for the queue-depth gauge).
pub async fn ready_count(ex: impl PgExecutor<'_>) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"select count(*) as "n!" from subtask_instance where status = 'READY'"#
    )
    .fetch_one(ex)
    .await?)
}
