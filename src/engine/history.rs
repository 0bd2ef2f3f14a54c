//! History maintenance: counts settled tasks into the daily rollups and
//! removes finished tasks older than the retention, on a schedule in every
//! engine process but in one process at a time (a session advisory lock),
//! and by hand with `taskd prune`.

use super::Result;
use crate::store::{self, history::Removed};
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Settlings counted per rollup statement.
const ROLLUP_BATCH: i64 = 2000;

/// How the maintenance pass behaves.
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    /// Finished tasks older than this are removed; None keeps them all.
    pub retention: Option<Duration>,
    /// How often a process tries a pass.
    pub interval: Duration,
    /// Tasks removed per transaction.
    pub prune_batch: i64,
    /// Pause between two prune transactions, so that a large prune yields
    /// to the engine's own writes.
    pub prune_pause: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            retention: Some(Duration::from_secs(90 * 86_400)),
            interval: Duration::from_secs(60),
            prune_batch: 200,
            prune_pause: Duration::from_millis(20),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Another process holds the maintenance lock.
    Busy,
    Done {
        /// Settlings counted into the rollups.
        rolled_up: i64,
        removed: Removed,
    },
}

#[derive(Clone)]
pub struct Maintenance {
    pool: PgPool,
    cfg: HistoryConfig,
}

impl Maintenance {
    pub fn new(pool: PgPool, cfg: HistoryConfig) -> Self {
        Maintenance { pool, cfg }
    }

    /// One pass if no other process is in one: drain the rollup queue, then
    /// prune by the configured retention.
    pub async fn run_once(&self) -> Result<Pass> {
        let mut conn = self.pool.acquire().await?;
        if !store::history::try_lock(&mut conn).await? {
            return Ok(Pass::Busy);
        }
        let outcome = self.locked_pass(&mut conn, self.cfg.retention).await;
        release(conn, outcome.is_ok()).await;
        let (rolled_up, removed) = outcome?;
        Ok(Pass::Done { rolled_up, removed })
    }

    /// `taskd prune`: waits for any running pass, then drains the rollup
    /// queue and removes the tasks finished more than `older_than` ago.
    pub async fn prune_now(&self, older_than: Duration) -> Result<(i64, Removed)> {
        let mut conn = self.pool.acquire().await?;
        store::history::lock(&mut conn).await?;
        let outcome = self.locked_pass(&mut conn, Some(older_than)).await;
        release(conn, outcome.is_ok()).await;
        outcome
    }

    /// What `prune_now(older_than)` would remove, changing nothing.
    pub async fn preview(&self, older_than: Duration) -> Result<(DateTime<Utc>, Removed)> {
        let cutoff = store::history::cutoff(&self.pool, older_than.as_secs_f64()).await?;
        Ok((
            cutoff,
            store::history::prune_preview(&self.pool, cutoff).await?,
        ))
    }

    async fn locked_pass(
        &self,
        conn: &mut PoolConnection<Postgres>,
        retention: Option<Duration>,
    ) -> Result<(i64, Removed)> {
        let mut rolled_up = 0;
        loop {
            let n = store::history::rollup(&mut **conn, ROLLUP_BATCH).await?;
            rolled_up += n;
            if n < ROLLUP_BATCH {
                break;
            }
        }
        let mut removed = Removed::default();
        if let Some(age) = retention {
            let cutoff = store::history::cutoff(&mut **conn, age.as_secs_f64()).await?;
            loop {
                let r =
                    store::history::prune_batch(&mut **conn, cutoff, self.cfg.prune_batch).await?;
                removed += r;
                if r.tasks < self.cfg.prune_batch {
                    break;
                }
                tokio::time::sleep(self.cfg.prune_pause).await;
            }
        }
        if rolled_up > 0 || removed.tasks > 0 {
            tracing::info!(
                rolled_up,
                tasks = removed.tasks,
                subtasks = removed.subtasks,
                edges = removed.edges,
                logs = removed.logs,
                "history maintenance pass"
            );
        }
        Ok((rolled_up, removed))
    }

    /// A pass every `interval` until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.cfg.interval) => {}
            }
            if let Err(e) = self.run_once().await {
                tracing::warn!(error = %e, "history maintenance failed; will retry");
            }
        }
    }
}

/// Gives the connection back unlocked; after a failure it is closed
/// instead, since whether it still holds the lock is unknown (closing
/// ends the session, and the lock with it).
async fn release(mut conn: PoolConnection<Postgres>, ok: bool) {
    if ok && store::history::unlock(&mut conn).await.is_ok() {
        return;
    }
    let _ = sqlx::Connection::close(conn.detach()).await;
}

/// Parses an age such as `90d`, `12h`, `30m`, `45s` (or `0` for none).
pub fn parse_age(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not an age like 90d, 12h, 30m or 45s"))?;
    let secs = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" | "" if n == 0 || !unit.is_empty() => 1,
        _ => return Err(format!("{s:?} is not an age like 90d, 12h, 30m or 45s")),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::parse_age;
    use std::time::Duration;

    #[test]
    fn ages_parse_with_their_unit() {
        assert_eq!(parse_age("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(12 * 3_600)));
        assert_eq!(parse_age("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_age("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_age("0"), Ok(Duration::ZERO));
        assert!(parse_age("90").is_err());
        assert!(parse_age("d").is_err());
        assert!(parse_age("-1d").is_err());
        assert!(parse_age("3w").is_err());
        assert!(parse_age("99999999999999999d").is_err());
    }
}
