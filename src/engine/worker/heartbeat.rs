//! Liveness: the worker heartbeats its own row on a connection of its own,
//! every statement bounded by a timeout on both sides (the server's
//! `statement_timeout`, and the client dropping the connection when no
//! answer comes, which bounds a black-holed link as `tcp_user_timeout`
//! would; sqlx exposes no TCP keepalive setting). When heartbeats keep
//! failing it claims nothing, keeps the runs the host agent fences, and
//! hands back every other run before its lease could pass. A heartbeat
//! that finds the row gone learns the worker was declared dead. Each
//! heartbeat also polls for cancels whose notification was missed.

use super::{StopReason, Worker};
use crate::engine::Result;
use crate::store;
use sqlx::{ConnectOptions, PgConnection};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

impl Worker {
    /// One heartbeat on the shared pool; false when the row was gone
    /// (revived now). The loop uses `beat` on its own connection.
    pub async fn heartbeat(&self) -> Result<bool> {
        let alive = store::worker::heartbeat(&self.inner.pool, &self.inner.id).await?;
        self.after_beat(alive).await?;
        Ok(alive)
    }

    async fn after_beat(&self, alive: bool) -> Result<()> {
        if !alive {
            tracing::warn!(worker = %self.inner.id, "declared dead by a sweeper; stopping running work");
            self.stop_all(StopReason::LostLease);
            self.register().await?;
        }
        self.poll_cancels().await
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

    /// How long one heartbeat (or its connect) may take: a quarter of
    /// dead-after, so several fit before the lease could pass.
    fn beat_timeout(&self) -> Duration {
        (self.inner.cfg.dead_after / 4).max(Duration::from_millis(50))
    }

    /// One heartbeat on the heartbeat connection, (re)connecting first if
    /// needed; a failure or timeout drops the connection.
    async fn beat(&self, conn: &mut Option<PgConnection>) -> Result<bool> {
        let limit = self.beat_timeout();
        let timed_out = || {
            crate::engine::Error::Store(crate::store::Error::Db(sqlx::Error::Io(
                std::io::Error::new(std::io::ErrorKind::TimedOut, "heartbeat timed out"),
            )))
        };
        if conn.is_none() {
            let opts = (*self.inner.pool.connect_options())
                .clone()
                .application_name("taskd heartbeat")
                .options([("statement_timeout", limit.as_millis().to_string())]);
            let c = tokio::time::timeout(limit, opts.connect())
                .await
                .map_err(|_| timed_out())??;
            *conn = Some(c);
        }
        let Some(c) = conn.as_mut() else {
            return Err(timed_out());
        };
        let r =
            tokio::time::timeout(limit, store::worker::heartbeat(&mut *c, &self.inner.id)).await;
        match r {
            Ok(Ok(alive)) => Ok(alive),
            Ok(Err(e)) => {
                *conn = None;
                Err(e.into())
            }
            Err(_) => {
                *conn = None;
                Err(timed_out())
            }
        }
    }

    pub(super) async fn heartbeat_loop(self, stop: CancellationToken) {
        let inner = &self.inner;
        let mut conn: Option<PgConnection> = None;
        // When the last heartbeat that landed was sent: the sweeper cannot
        // declare this worker dead before dead-after has passed since.
        let mut last_ok = Instant::now();
        let mut retry_now = false;
        loop {
            if !retry_now {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(inner.cfg.heartbeat_interval) => {}
                }
            } else {
                // Not a busy loop when connections are refused at once.
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(inner.cfg.heartbeat_interval / 4) => {}
                }
            }
            crate::metrics::METRICS
                .heartbeat_age
                .set(last_ok.elapsed().as_secs_f64());
            let sent = Instant::now();
            match self.beat(&mut conn).await {
                Ok(alive) => {
                    last_ok = sent;
                    retry_now = false;
                    if !inner.healthy.swap(true, Ordering::Relaxed) {
                        tracing::info!("heartbeat restored; claiming again");
                        inner.wake.notify_one();
                    }
                    let limit = self.beat_timeout();
                    match tokio::time::timeout(limit * 2, self.after_beat(alive)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "after the heartbeat"),
                        Err(_) => tracing::warn!("cancel polling timed out"),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "heartbeat failed");
                    // Retry at once: the next attempt must end before the
                    // hand-back deadline.
                    retry_now = true;
                    let deadline = last_ok + inner.cfg.dead_after * 3 / 4;
                    if Instant::now() + self.beat_timeout() >= deadline {
                        if inner.healthy.swap(false, Ordering::Relaxed) {
                            tracing::error!(
                                "cannot heartbeat; claiming nothing, handing back runs no agent fences"
                            );
                        }
                        let n = self.stop_unfenced();
                        if n > 0 {
                            tracing::warn!(
                                runs = n,
                                "handing back runs before this worker's lease can pass"
                            );
                        }
                        // Past the deadline, pace the attempts again.
                        retry_now = Instant::now() < deadline;
                    }
                }
            }
        }
    }
}
