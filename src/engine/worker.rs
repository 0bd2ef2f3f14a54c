//! The worker: claims READY subtasks up to its free slots, runs their actions
//! outside any transaction, and hands the results to a batching finisher.
//! It heartbeats its own row and stops its work when it cannot; LISTEN/NOTIFY
//! wakes it, polling is the fallback. `run_once` drives it one step at a
//! time for tests.

use super::finish::{finish_and_start, finish_batch, Finished, Outcome};
use super::{new_worker_id, EngineConfig, Result};
use crate::actions::{ActionError, Deps, Registry, Run};
use crate::model::SubtaskOperation;
use crate::store::{self, subtask::Claimed, subtask::RunKey};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Why a run was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    UserCancel,
    Shutdown,
    /// This worker lost its heartbeat: the sweeper owns the run now.
    LostLease,
}

struct Slot {
    cancel: CancellationToken,
    reason: Mutex<Option<StopReason>>,
}

impl Slot {
    fn stop(&self, reason: StopReason) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(reason);
        }
        self.cancel.cancel();
    }

    fn reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Inner {
    id: String,
    pool: PgPool,
    registry: Registry,
    deps: Deps,
    cfg: EngineConfig,
    running: Mutex<HashMap<i64, Arc<Slot>>>,
    /// Wakes the claim loop: a notification, a freed slot.
    wake: Notify,
    /// Signals that a slot was freed (shutdown waits on it).
    freed: Notify,
    healthy: AtomicBool,
    /// Set once shutdown begins: the finisher starts no more successors.
    stopping: AtomicBool,
}

/// A worker process's engine half. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

/// What one run produced: a result to write, or nothing (lease lost).
enum RunResult {
    Write(Finished),
    Abandon(i64),
}

impl Worker {
    pub fn new(pool: PgPool, registry: Registry, cfg: EngineConfig) -> Self {
        Worker::with_id(new_worker_id(), pool, registry, cfg)
    }

    pub fn with_id(id: String, pool: PgPool, registry: Registry, cfg: EngineConfig) -> Self {
        let deps = Deps::new(pool.clone());
        Worker {
            inner: Arc::new(Inner {
                id,
                pool,
                registry,
                deps,
                cfg,
                running: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                freed: Notify::new(),
                healthy: AtomicBool::new(true),
                stopping: AtomicBool::new(false),
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Registers (or revives) this worker's liveness row.
    pub async fn register(&self) -> Result<()> {
        let i = &self.inner;
        store::worker::register(
            &i.pool,
            &i.id,
            &crate::config::host_name(),
            std::process::id() as i32,
            i.cfg.slots as i32,
        )
        .await?;
        Ok(())
    }

    /// One heartbeat; false when the row was gone (revived now).
    pub async fn heartbeat(&self) -> Result<bool> {
        let alive = store::worker::heartbeat(&self.inner.pool, &self.inner.id).await?;
        if !alive {
            tracing::warn!(worker = %self.inner.id, "declared dead by a sweeper; stopping running work");
            self.stop_all(StopReason::LostLease);
            self.register().await?;
        }
        self.poll_cancels().await?;
        Ok(alive)
    }

    fn running_len(&self) -> usize {
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    fn slot(&self, id: i64) -> Option<Arc<Slot>> {
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    fn stop_all(&self, reason: StopReason) {
        let slots: Vec<Arc<Slot>> = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for s in slots {
            s.stop(reason);
        }
    }

    /// Stops the run of `subtask` if this worker holds it (user cancel).
    fn cancel_run(&self, subtask: i64) {
        if let Some(slot) = self.slot(subtask) {
            tracing::info!(
                subtask_id = subtask,
                "cancel requested; stopping the action"
            );
            slot.stop(StopReason::UserCancel);
        }
    }

    /// Polling fallback for cancels whose notification was missed.
    async fn poll_cancels(&self) -> Result<()> {
        if self.running_len() == 0 {
            return Ok(());
        }
        for id in store::subtask::canceling_for(&self.inner.pool, &self.inner.id).await? {
            self.cancel_run(id);
        }
        Ok(())
    }

    /// Claims up to the free slots. The claimed runs are registered as
    /// running; the caller runs them.
    async fn claim(&self, limit: usize) -> Result<Vec<Claimed>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let claimed = store::subtask::claim(&self.inner.pool, &self.inner.id, limit as i64).await?;
        if !claimed.is_empty() {
            let m = &crate::metrics::METRICS;
            m.claim_batch
                .with_label_values(&[])
                .observe(claimed.len() as f64);
            for c in &claimed {
                m.claimed
                    .with_label_values(&[crate::metrics::class_label(&c.class_name)])
                    .inc();
                m.handoff
                    .with_label_values(&[])
                    .observe(c.handoff_s.max(0.0));
            }
        }
        self.hold(&claimed);
        Ok(claimed)
    }

    /// Registers runs this worker now holds (claimed, or started by its
    /// finisher).
    fn hold(&self, runs: &[Claimed]) {
        let mut running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        for c in runs {
            running.insert(
                c.id,
                Arc::new(Slot {
                    cancel: CancellationToken::new(),
                    reason: Mutex::new(None),
                }),
            );
        }
    }

    fn free_slots(&self) -> usize {
        self.inner.cfg.slots.saturating_sub(self.running_len())
    }

    /// Test driver: claims what fits, runs it all to completion, finishes
    /// it in one batch. Returns how many runs it claimed.
    pub async fn run_once(&self) -> Result<usize> {
        let claimed = self.claim(self.free_slots()).await?;
        let n = claimed.len();
        let results = futures::future::join_all(claimed.into_iter().map(|c| self.execute(c))).await;
        let mut writes = Vec::new();
        for r in results {
            match r {
                RunResult::Write(f) => writes.push(f),
                RunResult::Abandon(id) => self.release_slot(id),
            }
        }
        self.write(&writes).await?;
        Ok(n)
    }

    /// Test driver: `run_once` until nothing is claimable; returns the total.
    pub async fn drain(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let n = self.run_once().await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    /// Test driver: claims and starts runs in the background without
    /// finishing them; `finish_started` later writes their results. Lets a
    /// test hold a run RUNNING (e.g. to cancel it, or to kill its worker).
    pub async fn start(&self) -> Result<Started> {
        let claimed = self.claim(self.free_slots()).await?;
        let ids = claimed.iter().map(|c| c.id).collect();
        let handles = claimed
            .into_iter()
            .map(|c| {
                let w = self.clone();
                tokio::spawn(async move { w.execute(c).await })
            })
            .collect();
        Ok(Started { ids, handles })
    }

    /// Writes the results of runs begun by `start`, once they end. Returns
    /// per run whether its result was applied (false: fenced out).
    pub async fn finish_started(&self, started: Started) -> Result<Vec<bool>> {
        let mut writes = Vec::new();
        let mut kinds = Vec::new();
        for h in started.handles {
            match h.await {
                Ok(RunResult::Write(f)) => {
                    kinds.push(true);
                    writes.push(f);
                }
                Ok(RunResult::Abandon(id)) => {
                    self.release_slot(id);
                    kinds.push(false);
                }
                Err(e) => return Err(super::Error::RunLost(e)),
            }
        }
        let applied = self.write(&writes).await?;
        let mut it = applied.into_iter();
        Ok(kinds
            .into_iter()
            .map(|k| k && it.next().unwrap_or(false))
            .collect())
    }

    async fn write(&self, writes: &[Finished]) -> Result<Vec<bool>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let applied = finish_batch(&self.inner.pool, &self.inner.cfg, writes).await;
        for f in writes {
            self.release_slot(f.run.id);
        }
        applied
    }

    fn release_slot(&self, id: i64) {
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        self.inner.freed.notify_waiters();
        self.inner.wake.notify_one();
    }

    /// Runs one claimed subtask's action, outside any transaction, bounded by
    /// its timeout and stoppable by cancel.
    async fn execute(&self, c: Claimed) -> RunResult {
        let span = tracing::info_span!(
            "subtask",
            trace_id = %c.trace_id,
            task_id = c.task_id,
            subtask_id = c.id,
            run_time = c.run_time,
            class_name = %c.class_name,
        );
        self.execute_inner(c).instrument(span).await
    }

    async fn execute_inner(&self, c: Claimed) -> RunResult {
        let inner = &self.inner;
        let key = RunKey {
            id: c.id,
            run_time: c.run_time,
            executor: inner.id.clone(),
        };
        let finished = |outcome: Outcome| {
            RunResult::Write(Finished {
                run: key.clone(),
                task_id: c.task_id,
                operation: c.operation,
                retry_limit: c.retry_limit,
                class_name: c.class_name.clone(),
                outcome,
            })
        };
        let Some(slot) = self.slot(c.id) else {
            return RunResult::Abandon(c.id);
        };
        let (action, params) = match inner.registry.resolve(&c.class_name) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot run subtask");
                return finished(Outcome::Failed {
                    error: e.to_string(),
                    cancelled: false,
                });
            }
        };
        let mut run = Run {
            task_id: c.task_id,
            subtask_id: c.id,
            run_time: c.run_time,
            operation: c.operation,
            name: c.name.clone(),
            trace_id: c.trace_id.clone(),
            parallel_idx: c.parallel_idx,
            timeout: Duration::from_secs(c.timeout_s.max(1) as u64),
            params,
            context: c.context.0.clone(),
            cancel: slot.cancel.clone(),
            deps: inner.deps.clone(),
        };
        tracing::info!(operation = %c.operation, name = %c.name, "subtask run started");
        let timeout = Duration::from_secs(c.timeout_s.max(1) as u64);
        let token = slot.cancel.clone();
        let action2 = action.clone();
        // The action runs in its own task so that a panic fails the run
        // instead of the worker.
        // The spawned task keeps this run's span, so the action's own lines
        // carry the trace, task, subtask and run_time too.
        let handle = tokio::spawn(
            async move {
                let r = if run.operation == SubtaskOperation::Rollback {
                    action2.rollback(&mut run).await
                } else {
                    action2.execute(&mut run).await
                };
                (r, run)
            }
            .instrument(tracing::Span::current()),
        );
        let abort = handle.abort_handle();
        let mut timed_out = false;
        let joined = tokio::select! {
            j = handle => Some(j),
            _ = tokio::time::sleep(timeout) => { timed_out = true; None }
            _ = token.cancelled() => None,
        };
        let (result, run) = match joined {
            Some(Ok((r, run))) => (r, Some(run)),
            Some(Err(e)) => (
                Err(ActionError::failed(format!("action panicked: {e}"))),
                None,
            ),
            None => {
                // Stop the action: cancel its token, then drop its future.
                token.cancel();
                abort.abort();
                (Err(ActionError::Cancelled), None)
            }
        };
        let outcome = match result {
            Ok(()) => match run {
                Some(run) if run.context != c.context.0 => Outcome::Succeeded(Some(run.context)),
                _ => Outcome::Succeeded(None),
            },
            Err(ActionError::Failed(msg)) => Outcome::Failed {
                error: msg,
                cancelled: false,
            },
            Err(ActionError::Cancelled) => {
                if timed_out {
                    crate::metrics::METRICS
                        .timed_out
                        .with_label_values(&[crate::metrics::class_label(&c.class_name)])
                        .inc();
                    Outcome::Failed {
                        error: format!("subtask timed out after {} s", c.timeout_s),
                        cancelled: false,
                    }
                } else {
                    match slot.reason() {
                        Some(StopReason::Shutdown) => Outcome::Release,
                        Some(StopReason::LostLease) => {
                            tracing::warn!("run abandoned: this worker lost its heartbeat");
                            return RunResult::Abandon(c.id);
                        }
                        Some(StopReason::UserCancel) | None => Outcome::Failed {
                            error: "subtask canceled".into(),
                            cancelled: true,
                        },
                    }
                }
            }
        };
        if timed_out
            || matches!(
                &outcome,
                Outcome::Failed {
                    cancelled: true,
                    ..
                }
            )
        {
            let cleanup = Run {
                task_id: c.task_id,
                subtask_id: c.id,
                run_time: c.run_time,
                operation: c.operation,
                name: c.name.clone(),
                trace_id: c.trace_id.clone(),
                parallel_idx: c.parallel_idx,
                timeout: Duration::from_secs(c.timeout_s.max(1) as u64),
                params: inner
                    .registry
                    .resolve(&c.class_name)
                    .map(|r| r.1)
                    .unwrap_or_default(),
                context: c.context.0.clone(),
                cancel: CancellationToken::new(),
                deps: inner.deps.clone(),
            };
            action.cancel(&cleanup).await;
        }
        match &outcome {
            Outcome::Succeeded(_) => tracing::info!("subtask run succeeded"),
            Outcome::Failed { error, .. } => tracing::warn!(error = %error, "subtask run failed"),
            Outcome::Release => tracing::info!("subtask run handed back"),
        }
        finished(outcome)
    }

    /// The worker loop until `shutdown` fires; then stops claiming, lets
    /// running subtasks finish within the grace period and hands back the
    /// rest.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        self.register().await?;
        tracing::info!(worker = %self.inner.id, slots = self.inner.cfg.slots, "worker started");
        let background = CancellationToken::new();
        let (tx, rx) = mpsc::unbounded_channel::<RunResult>();
        let finisher = tokio::spawn(self.clone().finisher(rx, tx.downgrade()));
        let heart = tokio::spawn(self.clone().heartbeat_loop(background.clone()));
        let listen = tokio::spawn(self.clone().listen_loop(background.clone()));

        let inner = &self.inner;
        let mut claim_errors = 0u32;
        while !shutdown.is_cancelled() {
            let mut full = false;
            if inner.healthy.load(Ordering::Relaxed) {
                let free = self.free_slots();
                match self.claim(free).await {
                    Ok(claimed) => {
                        claim_errors = 0;
                        full = free > 0 && claimed.len() == free;
                        for c in claimed {
                            let w = self.clone();
                            let tx = tx.clone();
                            tokio::spawn(async move {
                                let r = w.execute(c).await;
                                let _ = tx.send(r);
                            });
                        }
                    }
                    Err(e) => {
                        claim_errors += 1;
                        tracing::warn!(error = %e, "claim failed; will retry");
                    }
                }
            }
            if full && self.free_slots() > 0 {
                continue;
            }
            let pause = if claim_errors > 0 {
                inner
                    .cfg
                    .poll_interval
                    .max(Duration::from_millis(100 * u64::from(claim_errors.min(20))))
            } else {
                inner.cfg.poll_interval
            };
            tokio::select! {
                _ = inner.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => {}
            }
        }

        inner.stopping.store(true, Ordering::Relaxed);
        tracing::info!(
            running = self.running_len(),
            "worker stopping: no more claims"
        );
        let deadline = Instant::now() + inner.cfg.shutdown_grace;
        while self.running_len() > 0 && Instant::now() < deadline {
            let freed = inner.freed.notified();
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        if self.running_len() > 0 {
            tracing::info!(
                running = self.running_len(),
                "grace period over; handing back running subtasks"
            );
            self.stop_all(StopReason::Shutdown);
        }
        drop(tx);
        let _ = finisher.await;
        background.cancel();
        let _ = heart.await;
        let _ = listen.await;
        if let Err(e) = store::worker::deregister(&inner.pool, &inner.id).await {
            tracing::warn!(error = %e, "could not remove the worker row");
        }
        tracing::info!(worker = %inner.id, "worker stopped");
        Ok(())
    }

    /// Writes finished runs in batches; retries a failed write until it
    /// lands or the run is no longer ours (then the sweeper recovers it).
    /// The subtasks a batch makes runnable start here at once, in the slots
    /// the batch frees, unless the worker is stopping; their results come
    /// back through `tx` (weak, so that the channel closes once the claim
    /// loop and every run are done).
    async fn finisher(
        self,
        mut rx: mpsc::UnboundedReceiver<RunResult>,
        tx: mpsc::WeakUnboundedSender<RunResult>,
    ) {
        let max = self.inner.cfg.finish_batch;
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < max {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let mut writes = Vec::new();
            for r in batch {
                match r {
                    RunResult::Write(f) => writes.push(f),
                    RunResult::Abandon(id) => self.release_slot(id),
                }
            }
            let mut attempt = 0u32;
            loop {
                let i = &self.inner;
                let start =
                    if i.stopping.load(Ordering::Relaxed) || !i.healthy.load(Ordering::Relaxed) {
                        0
                    } else {
                        writes.len()
                    };
                match finish_and_start(&i.pool, &i.cfg, &writes, &i.id, start).await {
                    Ok((_, started)) => {
                        self.start_runs(started, &tx);
                        break;
                    }
                    Err(e) => {
                        attempt += 1;
                        tracing::warn!(error = %e, attempt, "finishing runs failed; retrying");
                        if attempt >= 30 {
                            tracing::error!(
                                runs = writes.len(),
                                "giving up on writing these runs; the sweeper will recover them"
                            );
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt.min(10))))
                            .await;
                    }
                }
            }
            for f in &writes {
                self.release_slot(f.run.id);
            }
        }
    }

    /// Runs the subtasks the finisher started, like claimed ones.
    fn start_runs(&self, started: Vec<Claimed>, tx: &mpsc::WeakUnboundedSender<RunResult>) {
        if started.is_empty() {
            return;
        }
        let m = &crate::metrics::METRICS;
        for c in &started {
            m.claimed
                .with_label_values(&[crate::metrics::class_label(&c.class_name)])
                .inc();
            m.handoff.with_label_values(&[]).observe(0.0);
        }
        self.hold(&started);
        if self.inner.stopping.load(Ordering::Relaxed) {
            // Shutdown began while the batch was being written: hand these
            // back at once instead of starting new work.
            for c in &started {
                if let Some(slot) = self.slot(c.id) {
                    slot.stop(StopReason::Shutdown);
                }
            }
        }
        for c in started {
            let w = self.clone();
            match tx.upgrade() {
                Some(tx) => {
                    tokio::spawn(async move {
                        let r = w.execute(c).await;
                        let _ = tx.send(r);
                    });
                }
                // Every sender is gone only once the worker has stopped:
                // its row is removed and the sweeper recovers the run.
                None => {
                    tracing::warn!(
                        subtask_id = c.id,
                        "result channel closed; leaving the run to the sweeper"
                    );
                    w.release_slot(c.id);
                }
            }
        }
    }

    async fn heartbeat_loop(self, stop: CancellationToken) {
        let inner = &self.inner;
        let mut last_ok = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(inner.cfg.heartbeat_interval) => {}
            }
            crate::metrics::METRICS
                .heartbeat_age
                .set(last_ok.elapsed().as_secs_f64());
            match self.heartbeat().await {
                Ok(_) => {
                    last_ok = Instant::now();
                    if !inner.healthy.swap(true, Ordering::Relaxed) {
                        tracing::info!("heartbeat restored; claiming again");
                        inner.wake.notify_one();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "heartbeat failed");
                    if last_ok.elapsed() >= inner.cfg.dead_after
                        && inner.healthy.swap(false, Ordering::Relaxed)
                    {
                        tracing::error!("cannot heartbeat; stopping running work and claims");
                        self.stop_all(StopReason::LostLease);
                    }
                }
            }
        }
    }

    async fn listen_loop(self, stop: CancellationToken) {
        loop {
            let mut listener = match PgListener::connect_with(&self.inner.pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; polling meanwhile");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if let Err(e) = listener
                .listen_all([store::READY_CHANNEL, store::CANCEL_CHANNEL])
                .await
            {
                tracing::warn!(error = %e, "LISTEN failed; polling meanwhile");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
            // Anything sent while we were not listening: look now.
            self.inner.wake.notify_one();
            loop {
                let n = tokio::select! {
                    _ = stop.cancelled() => return,
                    n = listener.try_recv() => n,
                };
                match n {
                    Ok(Some(n)) if n.channel() == store::CANCEL_CHANNEL => {
                        if let Ok(id) = n.payload().parse::<i64>() {
                            self.cancel_run(id);
                        }
                    }
                    Ok(Some(_)) => self.inner.wake.notify_one(),
                    Ok(None) => {
                        // Connection lost and re-established: we may have
                        // missed hints.
                        self.inner.wake.notify_one();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection broke; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}

/// Runs begun by [`Worker::start`].
pub struct Started {
    pub ids: Vec<i64>,
    handles: Vec<tokio::task::JoinHandle<RunResult>>,
}
