//! Settings from command-line flags, each with an environment fallback.

use clap::Args;
use std::time::Duration;

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// PostgreSQL URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/taskd"
    )]
    pub database_url: String,

    /// Largest number of pooled database connections.
    #[arg(long, env = "TASKD_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
}

/// How the worker loops and the sweeper behave.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Subtasks one process runs at once (its claim batch is at most this).
    #[arg(long, env = "TASKD_WORKER_SLOTS", default_value_t = 32)]
    pub worker_slots: usize,

    /// Fallback poll interval when no notification arrives, in milliseconds.
    #[arg(long, env = "TASKD_POLL_INTERVAL_MS", default_value_t = 1000)]
    pub poll_interval_ms: u64,

    /// Heartbeat interval of each worker, in milliseconds.
    #[arg(long, env = "TASKD_HEARTBEAT_INTERVAL_MS", default_value_t = 1000)]
    pub heartbeat_interval_ms: u64,

    /// A worker silent this long is dead and its subtasks are recovered, in
    /// milliseconds.
    #[arg(long, env = "TASKD_DEAD_AFTER_MS", default_value_t = 4000)]
    pub dead_after_ms: u64,

    /// Sweeper interval, in milliseconds.
    #[arg(long, env = "TASKD_SWEEP_INTERVAL_MS", default_value_t = 1000)]
    pub sweep_interval_ms: u64,

    /// On SIGTERM, how long running subtasks may take to finish before they
    /// are handed back, in milliseconds.
    #[arg(long, env = "TASKD_SHUTDOWN_GRACE_MS", default_value_t = 10000)]
    pub shutdown_grace_ms: u64,

    /// First automatic-retry backoff, in milliseconds (doubles per attempt).
    #[arg(long, env = "TASKD_RETRY_BACKOFF_MS", default_value_t = 1000)]
    pub retry_backoff_ms: u64,

    /// Most finished runs written in one transaction.
    #[arg(long, env = "TASKD_FINISH_BATCH", default_value_t = 128)]
    pub finish_batch: usize,
}

impl EngineArgs {
    pub fn to_config(&self) -> crate::engine::EngineConfig {
        let ms = Duration::from_millis;
        crate::engine::EngineConfig {
            slots: self.worker_slots.max(1),
            poll_interval: ms(self.poll_interval_ms.max(1)),
            heartbeat_interval: ms(self.heartbeat_interval_ms.max(1)),
            dead_after: ms(self.dead_after_ms.max(1)),
            sweep_interval: ms(self.sweep_interval_ms.max(1)),
            shutdown_grace: ms(self.shutdown_grace_ms),
            retry_backoff: ms(self.retry_backoff_ms),
            retry_backoff_cap: Duration::from_secs(60),
            timeout_grace: Duration::from_secs(2),
            finish_batch: self.finish_batch.max(1),
        }
    }
}

/// Where the HTTP API listens and how much engine runs beside it.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address the HTTP API listens on (host:port).
    #[arg(long, env = "TASKD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// Worker loops run in this process (each with its own slots); the
    /// sweeper runs too when this is above 0. 0 makes an API-only replica.
    #[arg(long, env = "TASKD_WORKERS", default_value_t = 1)]
    pub workers: usize,
}
