//! The worker: claims READY subtasks up to its free slots, runs their actions
//! outside any transaction, and hands the results to a batching finisher.
//! This module owns the worker's shared state (its slots) and assembles its
//! loops; each loop lives in a file of its own:
//! - `claimer`: the claim loop (the producer);
//! - `executor`: one run of one action, bounded by timeout and cancel;
//! - `completer`: the finisher, which writes results and starts successors;
//! - `heartbeat`: the liveness row and the cancel polling fallback;
//! - `listener`: LISTEN/NOTIFY wake-ups;
//! - `drivers`: step-at-a-time drivers for tests.

mod claimer;
mod completer;
mod drivers;
mod executor;
mod heartbeat;
mod listener;

pub use drivers::Started;

use super::finish::Finished;
use super::{new_worker_id, EngineConfig, Result};
use crate::actions::{Deps, Registry};
use crate::store::{self, subtask::Claimed};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// Why a run was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    UserCancel,
    Shutdown,
    /// This worker was declared dead: the sweeper owns the run now.
    LostLease,
    /// This worker cannot heartbeat and its lease may pass soon: a run no
    /// agent fences is handed back (same run_time) before it can overlap
    /// with a new attempt.
    Outage,
}

struct Slot {
    cancel: CancellationToken,
    reason: Mutex<Option<StopReason>>,
    /// Set once its action is known to be fenced by the host agent.
    fenced: AtomicBool,
}

impl Slot {
    fn new() -> Self {
        Slot {
            cancel: CancellationToken::new(),
            reason: Mutex::new(None),
            fenced: AtomicBool::new(false),
        }
    }

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
    /// Held runs, keyed by (subtask id, run_time): a stale run of a subtask
    /// never touches the slot of a newer run of it.
    running: Mutex<HashMap<SlotKey, Arc<Slot>>>,
    /// Wakes the claim loop: a notification, a freed slot.
    wake: Notify,
    /// Signals that a slot was freed (shutdown waits on it).
    freed: Notify,
    healthy: AtomicBool,
    /// True while the LISTEN connection is up: only then may this worker
    /// mark itself idle and rely on notifications.
    listening: AtomicBool,
    /// True while this worker's row says it is idle (`worker.idle`).
    marked_idle: AtomicBool,
    /// Set once shutdown begins: the finisher starts no more successors.
    stopping: AtomicBool,
    /// A claim holds it (shared) from its statement until its runs are
    /// held; a read-back holds it alone, so it never takes a run just
    /// claimed for one a lost commit started.
    claim_gate: tokio::sync::RwLock<()>,
}

/// A worker process's engine half. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

/// A held run: (subtask id, run_time).
type SlotKey = (i64, i32);

/// What one run produced: a result to write, or nothing (lease lost).
enum RunResult {
    Write(Finished),
    Abandon(SlotKey),
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
                listening: AtomicBool::new(false),
                marked_idle: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                claim_gate: tokio::sync::RwLock::new(()),
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Registers (or revives) this worker's liveness row.
    pub async fn register(&self) -> Result<()> {
        let i = &self.inner;
        // A new row starts busy; a revived one keeps its mark, and the
        // claim loop marks it again when it finds nothing.
        i.marked_idle.store(false, Ordering::Relaxed);
        store::worker::register(
            &i.pool,
            &i.id,
            &crate::engine::host_name(),
            std::process::id() as i32,
            i.cfg.slots as i32,
        )
        .await?;
        Ok(())
    }

    fn running_len(&self) -> usize {
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    fn slot(&self, key: SlotKey) -> Option<Arc<Slot>> {
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
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

    /// Hands back every run no agent fences; returns how many.
    fn stop_unfenced(&self) -> usize {
        let slots: Vec<Arc<Slot>> = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| !s.fenced.load(Ordering::Relaxed))
            .cloned()
            .collect();
        for s in &slots {
            s.stop(StopReason::Outage);
        }
        slots.len()
    }

    /// Stops the runs of `subtask` this worker holds (user cancel).
    fn cancel_run(&self, subtask: i64) {
        let slots: Vec<Arc<Slot>> = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(k, _)| k.0 == subtask)
            .map(|(_, s)| s.clone())
            .collect();
        for slot in slots {
            tracing::info!(
                subtask_id = subtask,
                "cancel requested; stopping the action"
            );
            slot.stop(StopReason::UserCancel);
        }
    }

    /// Registers runs this worker now holds (claimed, or started by its
    /// finisher).
    fn hold(&self, runs: &[Claimed]) {
        let mut running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        for c in runs {
            running.insert((c.id, c.run_time), Arc::new(Slot::new()));
        }
    }

    fn free_slots(&self) -> usize {
        self.inner.cfg.slots.saturating_sub(self.running_len())
    }

    fn release_slot(&self, key: SlotKey) {
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        self.inner.freed.notify_waiters();
        self.inner.wake.notify_one();
    }

    /// Runs a held run in the background; its result goes to `tx`.
    fn spawn_run(&self, c: Claimed, tx: mpsc::UnboundedSender<RunResult>) {
        let w = self.clone();
        tokio::spawn(async move {
            let r = w.execute(c).await;
            let _ = tx.send(r);
        });
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

        self.claim_loop(&shutdown, &tx).await;

        let inner = &self.inner;
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
}
