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

    /// Finished tasks older than this (e.g. 90d, 12h) are removed with
    /// their subtasks, edges and logs by the engine's maintenance pass; 0
    /// keeps them all.
    #[arg(long, env = "TASKD_RETENTION", default_value = "90d", value_parser = crate::engine::history::parse_age)]
    pub retention: Duration,

    /// How often the maintenance pass (rollups for the DBA views, then
    /// retention) runs, in seconds; one process at a time does it.
    #[arg(long, env = "TASKD_MAINTENANCE_INTERVAL_SECS", default_value_t = 60)]
    pub maintenance_interval_secs: u64,
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
            history: crate::engine::HistoryConfig {
                retention: Some(self.retention).filter(|r| !r.is_zero()),
                interval: Duration::from_secs(self.maintenance_interval_secs.max(1)),
                ..Default::default()
            },
        }
    }
}

/// What `taskd prune` removes.
#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// Remove tasks that finished longer ago than this (e.g. 90d, 12h,
    /// 30m), with all their subtasks, edges and log lines. RUNNING tasks
    /// are never removed.
    #[arg(long, env = "TASKD_PRUNE_OLDER_THAN", value_parser = crate::engine::history::parse_age)]
    pub older_than: Duration,

    /// Only say what would be removed.
    #[arg(long, env = "TASKD_PRUNE_DRY_RUN")]
    pub dry_run: bool,
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

    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Authentication of the HTTP API and its first admin.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Name of the first admin: created on start (with the ADMIN role and
    /// `--admin-password`) when no user has this name; an existing user is
    /// left as it is. Needs `--admin-password`.
    #[arg(long, env = "TASKD_ADMIN_USER", requires = "admin_password")]
    pub admin_user: Option<String>,

    /// Password of the first admin (prefer the environment variable: a
    /// command line is visible to other local users). There is no default
    /// password.
    #[arg(long, env = "TASKD_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,

    /// Make `/metrics` need an authenticated user (any role); open
    /// otherwise.
    #[arg(long, env = "TASKD_METRICS_AUTH")]
    pub metrics_auth: bool,

    /// How long a verified user name and password are remembered in memory
    /// (as a salted SHA-256), sparing argon2 on the next requests, in
    /// seconds; 0 verifies every request.
    #[arg(long, env = "TASKD_AUTH_CACHE_TTL_SECS", default_value_t = 60)]
    pub auth_cache_ttl_secs: u64,

    /// Failed logins of one user name from one client IP within the window
    /// before that pair is slowed (wrong passwords then get 429).
    #[arg(long, env = "TASKD_LOGIN_MAX_FAILURES", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_max_failures: u32,

    /// The failed-login window, opened by a client's first failure, in
    /// seconds.
    #[arg(long, env = "TASKD_LOGIN_WINDOW_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub login_window_secs: u64,
}

impl AuthArgs {
    pub fn to_config(&self) -> crate::auth::AuthConfig {
        crate::auth::AuthConfig {
            metrics_auth: self.metrics_auth,
            cache_ttl: Duration::from_secs(self.auth_cache_ttl_secs),
            max_failures: self.login_max_failures,
            failure_window: Duration::from_secs(self.login_window_secs),
            ..crate::auth::AuthConfig::default()
        }
    }

    /// The first admin's name and password, when both are given.
    pub fn admin(&self) -> Option<(&str, &str)> {
        match (&self.admin_user, &self.admin_password) {
            (Some(u), Some(p)) if !u.is_empty() => Some((u, p)),
            _ => None,
        }
    }
}

/// A user to create with `taskd user add`.
#[derive(Debug, Clone, Args)]
pub struct UserAddArgs {
    /// The user's name (letters, digits, ".", "_", "@", "-").
    #[arg(long, env = "TASKD_USER_NAME")]
    pub name: String,

    #[command(flatten)]
    pub password: PasswordArgs,

    /// A role: ADMIN, CLUSTER_MANAGER, HOST_MANAGER, TASK_VIEWER or
    /// TASK_MANAGER; `CLUSTER_MANAGER:1,2` limits it to clusters 1 and 2.
    /// Repeat the flag (or separate with spaces) for several roles.
    #[arg(
        long = "role",
        env = "TASKD_USER_ROLES",
        value_name = "ROLE",
        required = true,
        value_delimiter = ' '
    )]
    pub roles: Vec<crate::auth::RoleGrant>,
}

/// A user whose password `taskd user passwd` sets.
#[derive(Debug, Clone, Args)]
pub struct UserPasswdArgs {
    /// The user's name.
    #[arg(long, env = "TASKD_USER_NAME")]
    pub name: String,

    #[command(flatten)]
    pub password: PasswordArgs,
}

/// Where a user's password comes from: standard input or a flag.
#[derive(Debug, Clone, Args)]
pub struct PasswordArgs {
    /// Read the password from standard input (one trailing newline is
    /// dropped).
    #[arg(long, env = "TASKD_USER_PASSWORD_STDIN")]
    pub password_stdin: bool,

    /// The password (prefer `--password-stdin` or the environment
    /// variable: a command line is visible to other local users).
    #[arg(long, env = "TASKD_USER_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

/// How the reference agent (`taskd agent`) runs.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Address the agent's HTTP API listens on.
    #[arg(long, env = "TASKD_AGENT_LISTEN", default_value = "127.0.0.1:62888")]
    pub listen: std::net::SocketAddr,

    /// Directory for the agent's state file, its lock and its processes'
    /// logs; created if missing. An agent restarted on the same directory
    /// keeps its state and adopts the processes still running.
    #[arg(long, env = "TASKD_AGENT_STATE_DIR")]
    pub state_dir: std::path::PathBuf,

    /// Command line that runs the observer, through `sh -c`; `{port}` and
    /// `{ip}` are replaced. Default: the built-in stand-in, which listens on
    /// the observer's port.
    #[arg(long, env = "TASKD_AGENT_OBSERVER_CMD")]
    pub observer_cmd: Option<String>,

    /// The observer's SQL port when a start request names none.
    #[arg(long, env = "TASKD_AGENT_OBSERVER_PORT", default_value_t = 2881,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub observer_port: u16,

    /// IP the observer binds and is probed on. Default: the listen IP, or
    /// 127.0.0.1 when listening on an unspecified address.
    #[arg(long, env = "TASKD_AGENT_OBSERVER_IP")]
    pub observer_ip: Option<std::net::IpAddr>,

    /// Graceful stop: how long to wait after SIGTERM before SIGKILL, in
    /// milliseconds.
    #[arg(long, env = "TASKD_AGENT_STOP_TIMEOUT_MS", default_value_t = 10000)]
    pub stop_timeout_ms: u64,

    /// What happens to the observer and the other processes when the agent
    /// exits: leave them running (the next agent adopts them) or stop them.
    #[arg(long, env = "TASKD_AGENT_ON_SHUTDOWN", value_enum, default_value_t = crate::agent::OnShutdown::Leave)]
    pub on_shutdown: crate::agent::OnShutdown,
}

impl AgentArgs {
    pub fn to_config(&self) -> crate::agent::AgentConfig {
        let mut cfg = crate::agent::AgentConfig::new(self.state_dir.clone());
        cfg.observer_cmd = self.observer_cmd.clone().filter(|c| !c.trim().is_empty());
        cfg.observer_port = self.observer_port;
        cfg.observer_ip = self.observer_ip;
        cfg.stop_timeout = Duration::from_millis(self.stop_timeout_ms);
        cfg.on_shutdown = self.on_shutdown;
        cfg
    }
}

/// The stand-in process (`taskd observer-standin`).
#[derive(Debug, Clone, Args)]
pub struct StandinArgs {
    /// TCP port to listen on; 0 takes any free port.
    #[arg(long, env = "TASKD_STANDIN_PORT", default_value_t = 2881)]
    pub port: u16,

    /// IP to listen on.
    #[arg(long, env = "TASKD_STANDIN_BIND", default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,

    /// Name in the stand-in's log lines (observer, pos_proxy, …).
    #[arg(long, env = "TASKD_STANDIN_NAME", default_value = "observer")]
    pub name: String,
}
