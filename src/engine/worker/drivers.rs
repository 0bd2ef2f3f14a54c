//! Step-at-a-time drivers for tests: claim, run and finish in the caller's
//! task instead of the worker's loops, so a test decides when each step
//! happens.

use super::{RunResult, Worker};
use crate::engine::finish::{finish_batch, Finished};
use crate::engine::Result;

/// Runs begun by [`Worker::start`].
pub struct Started {
    pub ids: Vec<i64>,
    handles: Vec<tokio::task::JoinHandle<RunResult>>,
}

impl Worker {
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
                RunResult::Abandon(key) => self.release_slot(key),
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
                Ok(RunResult::Abandon(key)) => {
                    self.release_slot(key);
                    kinds.push(false);
                }
                Err(e) => return Err(crate::engine::Error::RunLost(e)),
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
            self.release_slot((f.run.id, f.run.run_time));
        }
        applied
    }
}
