//! Finishing runs: one short transaction per batch that ends each run fenced
//! on (id, run_time, executor, status), promotes downstreams (or, rolling
//! back, upstreams) and settles the task.

use super::{EngineConfig, Result};
use crate::model::transitions::{self, AfterFailure};
use crate::model::{Context, SubtaskOperation, SubtaskStatus, TaskOperation, TaskStatus};
use crate::store::subtask::{Claimed, EndedKind, Promotable, RunEnd, RunKey};
use crate::store::{self, task::TaskRow};
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeMap, HashMap, HashSet};

/// How a run ended, as the worker (or the sweeper) saw it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The action succeeded; this is its context with the keys it added, or
    /// None when it added none (the stored input stays, unwritten).
    Succeeded(Option<Context>),
    /// The action failed; `cancelled` runs are never retried.
    Failed { error: String, cancelled: bool },
    /// The worker is shutting down: hand the run back untouched.
    Release,
    /// The run was lost with its worker (the sweeper's verdict): like
    /// `Failed`, but a retry is claimable at once, without backoff.
    Lost { error: String, cancelled: bool },
}

/// A finished run to write.
#[derive(Debug, Clone)]
pub struct Finished {
    pub run: RunKey,
    pub task_id: i64,
    pub operation: SubtaskOperation,
    pub retry_limit: i32,
    pub class_name: String,
    pub outcome: Outcome,
}

/// Writes finished runs in one transaction, tasks locked in id order, with
/// a fixed number of statements whatever the batch size. Returns, per run,
/// whether it was applied (false: the run was fenced out, its result
/// dropped).
pub async fn finish_batch(
    pool: &PgPool,
    cfg: &EngineConfig,
    items: &[Finished],
) -> Result<Vec<bool>> {
    finish_batch_with(pool, cfg, items, Promotion::InStatement).await
}

/// Where the subtasks a finish makes runnable are promoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promotion {
    /// In the finish statement itself (`store::subtask::end_and_promote`),
    /// falling back to the general path only for what it leaves (merges of
    /// several upstreams, settling, rollbacks). What production does.
    InStatement,
    /// Only by the general path (`after_change`), as user actions do. The
    /// differential test runs the same DAGs through both and compares every
    /// row, so the two definitions of promotion cannot drift apart.
    General,
}

/// `finish_batch` with the promotion path chosen.
pub async fn finish_batch_with(
    pool: &PgPool,
    cfg: &EngineConfig,
    items: &[Finished],
    promotion: Promotion,
) -> Result<Vec<bool>> {
    Ok(finish(pool, cfg, items, "", 0, promotion).await?.0)
}

/// `finish_batch` for the worker that ran the batch: up to `start` of the
/// subtasks the batch makes runnable become RUNNING for `executor` in the
/// same statement, and are returned for it to run (no READY row version,
/// no claim). The rest become READY for any worker.
pub async fn finish_and_start(
    pool: &PgPool,
    cfg: &EngineConfig,
    items: &[Finished],
    executor: &str,
    start: usize,
) -> Result<(Vec<bool>, Vec<Claimed>)> {
    finish(pool, cfg, items, executor, start, Promotion::InStatement).await
}

async fn finish(
    pool: &PgPool,
    cfg: &EngineConfig,
    items: &[Finished],
    executor: &str,
    start: usize,
    promotion: Promotion,
) -> Result<(Vec<bool>, Vec<Claimed>)> {
    let mut tx = pool.begin().await?;
    let done = finish_in(&mut tx, cfg, items, executor, start, promotion).await?;
    tx.commit().await?;
    Ok(done)
}

/// `finish_batch` in the caller's transaction (the sweeper fences its
/// recoveries on the worker's heartbeat in the same transaction).
pub(crate) async fn finish_in(
    tx: &mut PgConnection,
    cfg: &EngineConfig,
    items: &[Finished],
    executor: &str,
    start: usize,
    promotion: Promotion,
) -> Result<(Vec<bool>, Vec<Claimed>)> {
    let mut task_ids: Vec<i64> = items.iter().map(|f| f.task_id).collect();
    task_ids.sort_unstable();
    task_ids.dedup();
    store::prefer_index_scans(&mut *tx).await?;
    let mut tasks = store::task::lock_many(&mut *tx, &task_ids).await?;
    let mut notify = false;
    let mut applied = vec![false; items.len()];

    // Cancel beats retry and hand-back: a run asked to cancel (CANCELING)
    // that failed or is handed back ends cancelled. Its task row is locked
    // above, as cancel locks it, so the status read here holds until commit.
    let ask: Vec<i64> = items
        .iter()
        .filter(|f| may_retry(&f.outcome))
        .map(|f| f.run.id)
        .collect();
    let canceling: HashSet<i64> = if ask.is_empty() {
        HashSet::new()
    } else {
        store::subtask::canceling_among(&mut *tx, &ask)
            .await?
            .into_iter()
            .collect()
    };

    // Hand-backs (shutdown) are rare: one statement each.
    let mut ends = Vec::new();
    let mut end_of = Vec::new();
    for (i, f) in items.iter().enumerate() {
        let canceling = canceling.contains(&f.run.id);
        match run_end(cfg, f, canceling) {
            None => {
                applied[i] = store::subtask::release(&mut *tx, &f.run).await?;
                notify |= applied[i];
            }
            Some(end) => {
                end_of.push(i);
                ends.push((f.run.clone(), end));
            }
        }
    }
    let promotable: Vec<Promotable> = tasks
        .iter()
        .filter(|t| {
            promotion == Promotion::InStatement
                && t.status == TaskStatus::Running
                && t.operation != TaskOperation::Rollback
        })
        .map(|t| Promotable {
            task_id: t.id,
            max_concurrency: t.max_concurrency,
        })
        .collect();
    let start = if executor.is_empty() { 0 } else { start };
    let rows =
        store::subtask::end_and_promote(&mut *tx, &ends, &promotable, executor, start as i64)
            .await?;
    let mut written = HashSet::new();
    let mut standing: HashMap<i64, (i64, i64)> = HashMap::new();
    let mut started = Vec::new();
    for row in rows {
        match row.kind {
            EndedKind::End => {
                written.insert(row.id);
            }
            EndedKind::Task => {
                standing.insert(
                    row.task_id,
                    (row.active.unwrap_or(0), row.merges.unwrap_or(0)),
                );
            }
            EndedKind::Up => match row.status.as_deref() {
                Some("READY") => notify = true,
                _ => started.extend(row.into_run()?),
            },
        }
    }
    let mut changed: HashSet<i64> = HashSet::new();
    for (&i, (run, end)) in end_of.iter().zip(&ends) {
        let f = &items[i];
        if !written.contains(&run.id) {
            tracing::info!(
                subtask_id = run.id,
                run_time = run.run_time,
                "run was fenced out; its result is dropped"
            );
            continue;
        }
        applied[i] = true;
        changed.insert(f.task_id);
        count(f, end.status);
        match end.status {
            // Its upstreams may now be queued for their turn, which
            // `after_change` gives them within the free slots.
            SubtaskStatus::Pending => {
                store::subtask::rollback_upstreams(&mut *tx, run.id).await?;
            }
            SubtaskStatus::Ready => notify = true,
            _ => {}
        }
    }
    // The statement already filled the free slots of tasks still running
    // something; the rest (settling, rolling back, merging several
    // upstreams' contexts) take the general path.
    tasks.retain(|t| {
        changed.contains(&t.id)
            && match standing.get(&t.id) {
                Some(&(active, merges)) => active <= 0 || merges > 0,
                None => true,
            }
    });
    notify |= after_change(&mut *tx, &mut tasks).await?;
    if notify {
        store::notify_ready(&mut *tx).await?;
    }
    Ok((applied, started))
}

fn count(f: &Finished, status: SubtaskStatus) {
    let class = crate::metrics::class_label(&f.class_name);
    let m = &crate::metrics::METRICS;
    m.finished.with_label_values(&[class]).inc();
    // Every run that failed, whether it is retried (the subtask READY
    // again) or not: the help of the series says runs, not subtasks.
    if matches!(f.outcome, Outcome::Failed { .. } | Outcome::Lost { .. }) {
        m.failed.with_label_values(&[class]).inc();
    }
    if status == SubtaskStatus::Ready {
        m.retried.with_label_values(&[class]).inc();
    }
}

/// True for outcomes a cancel request changes: a failure that could be
/// retried, and a hand-back.
fn may_retry(o: &Outcome) -> bool {
    match o {
        Outcome::Failed { cancelled, .. } | Outcome::Lost { cancelled, .. } => !cancelled,
        Outcome::Release => true,
        Outcome::Succeeded(_) => false,
    }
}

/// Text PostgreSQL can store: a NUL character (which `text` refuses)
/// becomes the two characters `\0`.
pub(crate) fn storable(text: &str) -> String {
    text.replace('\0', "\\0")
}

/// How a run ends by the state machine; None for a hand-back. A run whose
/// row is CANCELING (`canceling`) is never retried nor handed back: it ends
/// FAILED with operation CANCEL.
fn run_end(cfg: &EngineConfig, f: &Finished, canceling: bool) -> Option<RunEnd> {
    let rolling_back = f.operation == SubtaskOperation::Rollback;
    let (error, cancelled, lost) = match &f.outcome {
        Outcome::Release if canceling => ("subtask canceled", true, false),
        Outcome::Release => return None,
        Outcome::Succeeded(_) if rolling_back => {
            return Some(RunEnd {
                status: SubtaskStatus::Pending,
                operation: SubtaskOperation::Rollback,
                run_time: f.run.run_time,
                context: None,
                error: None,
                backoff_ms: 0,
            })
        }
        Outcome::Succeeded(ctx) => {
            return Some(RunEnd {
                status: SubtaskStatus::Successful,
                operation: f.operation,
                run_time: f.run.run_time,
                context: ctx.clone().map(Context::deduped),
                error: None,
                backoff_ms: 0,
            })
        }
        Outcome::Failed { error, cancelled } => (error.as_str(), *cancelled || canceling, false),
        Outcome::Lost { error, cancelled } => (error.as_str(), *cancelled || canceling, true),
    };
    let error = Some(storable(error));
    Some(
        match transitions::after_failure(
            f.run.run_time,
            f.retry_limit,
            cancelled,
            cfg.retry_backoff,
            cfg.retry_backoff_cap,
        ) {
            AfterFailure::Retry { run_time, backoff } => RunEnd {
                status: SubtaskStatus::Ready,
                operation: if rolling_back {
                    SubtaskOperation::Rollback
                } else {
                    SubtaskOperation::Retry
                },
                run_time,
                context: None,
                error,
                // A run lost with its worker did not fail by itself: no
                // backoff before it is claimed again.
                backoff_ms: if lost { 0 } else { backoff.as_millis() as i64 },
            },
            AfterFailure::Fail => RunEnd {
                status: SubtaskStatus::Failed,
                operation: if cancelled {
                    SubtaskOperation::Cancel
                } else {
                    f.operation
                },
                run_time: f.run.run_time,
                context: None,
                error,
                backoff_ms: 0,
            },
        },
    )
}

/// A node's input: the merge of its upstreams' contexts (the task's context
/// for a root), with the node's own parallel split index.
pub(crate) fn input_of(mut merged: Context, parallel_idx: i32) -> Context {
    merged.parallel = parallel_idx >= 0;
    merged.parallel_idx = parallel_idx;
    merged
}

/// After any change to RUNNING tasks' subtasks: fill free concurrency slots
/// (the task's `max_concurrency` less its active count, kept by the
/// database) with subtasks whose upstreams are done, or, rolling back, with
/// subtasks queued for their rollback turn; then settle each task that has
/// nothing active left. Reads only as many waiting rows as there are free
/// slots; a task's subtasks are counted only when it may settle. Returns
/// true when subtasks became READY.
pub(crate) async fn after_change(conn: &mut PgConnection, tasks: &mut [TaskRow]) -> Result<bool> {
    let running: Vec<i64> = tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Running)
        .map(|t| t.id)
        .collect();
    if running.is_empty() {
        return Ok(false);
    }
    let mut active: HashMap<i64, i64> = store::task::active_counts(conn, &running)
        .await?
        .into_iter()
        .map(|(id, a)| (id, i64::from(a)))
        .collect();
    let (mut exec, mut exec_free, mut undo, mut undo_free) = (vec![], vec![], vec![], vec![]);
    for t in tasks.iter().filter(|t| t.status == TaskStatus::Running) {
        let free = i64::from(t.max_concurrency) - active.get(&t.id).copied().unwrap_or(0);
        if free <= 0 {
            continue;
        }
        if t.operation == TaskOperation::Rollback {
            undo.push(t.id);
            undo_free.push(free);
        } else {
            exec.push(t.id);
            exec_free.push(free);
        }
    }
    let mut promoted = false;
    if !exec.is_empty() {
        let waiting = store::subtask::waiting_for_slots(conn, &exec, &exec_free).await?;
        for (task, ready, _failed) in promote(conn, tasks, waiting).await? {
            *active.entry(task).or_default() += ready;
            promoted |= ready > 0;
        }
    }
    if !undo.is_empty() {
        let queued = store::subtask::queued_rollbacks(conn, &undo, &undo_free).await?;
        let (ids, run_times): (Vec<i64>, Vec<i32>) =
            queued.iter().map(|&(id, _, rt)| (id, rt)).unzip();
        for task in store::subtask::take_rollback_turns(conn, &ids, &run_times).await? {
            *active.entry(task).or_default() += 1;
            promoted = true;
        }
    }
    // Only a task with nothing active can settle: count just those.
    let idle: Vec<i64> = running
        .iter()
        .copied()
        .filter(|id| active.get(id).copied().unwrap_or(0) <= 0)
        .collect();
    let counts = if idle.is_empty() {
        HashMap::new()
    } else {
        store::subtask::status_counts(conn, &idle).await?
    };
    let (mut settled, mut statuses) = (Vec::new(), Vec::new());
    for t in tasks
        .iter_mut()
        .filter(|t| t.status == TaskStatus::Running && idle.contains(&t.id))
    {
        let c = counts.get(&t.id).copied().unwrap_or_default();
        if let Some(status) = transitions::settle(t.operation, c) {
            t.status = status;
            settled.push(t.id);
            statuses.push(status.as_str());
            tracing::info!(task_id = t.id, status = %status, operation = %t.operation, "task settled");
        }
    }
    store::task::set_statuses(conn, &settled, &statuses).await?;
    Ok(promoted)
}

/// Makes waiting subtasks READY with the merge of their upstreams' contexts
/// (the task's context for roots). A subtask whose upstreams disagree fails
/// instead. Returns (task, made ready, failed) per task.
async fn promote(
    conn: &mut PgConnection,
    tasks: &[TaskRow],
    waiting: Vec<store::subtask::Waiting>,
) -> Result<Vec<(i64, i64, i64)>> {
    if waiting.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = waiting.iter().map(|w| w.id).collect();
    let mut inputs: BTreeMap<i64, Vec<Context>> = BTreeMap::new();
    for (down, ctx) in store::subtask::upstream_contexts(conn, &ids).await? {
        inputs
            .entry(down)
            .or_default()
            .push(ctx.map(|c| c.0).unwrap_or_default());
    }
    let task_ctx: HashMap<i64, &Context> = tasks.iter().map(|t| (t.id, &t.context.0)).collect();
    let mut per_task: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    let (mut ready_ids, mut ready_ctx) = (Vec::new(), Vec::new());
    for w in waiting {
        let merged = match inputs.get(&w.id) {
            None => Ok(task_ctx
                .get(&w.task_id)
                .map(|c| (*c).clone())
                .unwrap_or_default()),
            Some(ups) => Context::merge_all(ups),
        };
        let entry = per_task.entry(w.task_id).or_default();
        match merged {
            Ok(ctx) => {
                ready_ids.push(w.id);
                ready_ctx.push(input_of(ctx, w.parallel_idx));
                entry.0 += 1;
            }
            Err(conflict) => {
                store::subtask::fail_pending(conn, w.id, &conflict.to_string()).await?;
                entry.1 += 1;
            }
        }
    }
    store::subtask::make_ready(conn, &ready_ids, &ready_ctx).await?;
    Ok(per_task.into_iter().map(|(t, (r, f))| (t, r, f)).collect())
}
