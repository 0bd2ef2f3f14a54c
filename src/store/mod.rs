//! All SQL lives here, one file per aggregate. Functions take an executor or
//! `&mut PgConnection`, so the caller owns the transaction.
//!
//! Static statements use sqlx's query macros (`query!`, `query_as!`,
//! `query_scalar!`): the build checks each against the schema of
//! `migrations/`, through the offline data committed in `.sqlx/` (regenerate
//! it with `.ci/sqlx-data`; README, "Compile-checked SQL"). A macro takes one
//! literal, so a row's columns are spelled out in each statement that reads
//! it. These stay runtime strings, for the reason given:
//! - `task::list`, `task::count`, `task::explain_list`: built per request
//!   with `QueryBuilder` (which filters apply, the sort, whether to gather a
//!   time range first).
//! - `subtask::claim` and `subtask::end_and_promote`: both splice the same
//!   run separator expression (`separator_line!`) with `concat!`, which the
//!   macros cannot take; the promotion statements of `subtask`
//!   (`end_and_promote` to `fail_pending`) are converted with the work on
//!   promotion cost (issue 15).
//! - `bench::drop_database`, `bench::recreate_database`,
//!   `bench_history::run_query`, `bench_history::plan`: a database name, or a
//!   statement the bench is given, is only known at run time.
//! - `db` (outside this module): `create database` with the configured name,
//!   and refinery's own history table, which `migrations/` does not create.

pub mod bench;
pub mod bench_history;
pub mod history;
pub mod inventory;
pub mod log;
pub mod session;
pub mod subtask;
pub mod task;
pub mod user;
pub mod worker;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
}

impl crate::db::DbFault for Error {
    fn sqlx_error(&self) -> Option<&sqlx::Error> {
        match self {
            Error::Db(e) => Some(e),
            Error::Corrupt(_) => None,
        }
    }
}

/// A task insert or state change refused by one of the task's unique
/// indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskConflict {
    /// The target already has a RUNNING task.
    TargetBusy,
    /// A task with this Idempotency-Key exists.
    IdempotencyKey,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when PostgreSQL refused a text value it cannot store (a NUL
    /// character): the caller's input, not a server fault.
    pub fn is_invalid_text(&self) -> bool {
        matches!(
            self,
            Error::Db(sqlx::Error::Database(d))
                if matches!(d.code().as_deref(), Some("22021") | Some("22P05"))
        )
    }

    /// Which of the task's unique indexes this error violates, if any.
    pub fn task_conflict(&self) -> Option<TaskConflict> {
        match self.unique_violation()? {
            task::ONE_RUNNING_PER_TARGET => Some(TaskConflict::TargetBusy),
            task::IDEMPOTENCY_KEY_INDEX => Some(TaskConflict::IdempotencyKey),
            _ => None,
        }
    }

    /// The name of the violated unique constraint or index, if that is what
    /// this error is.
    pub fn unique_violation(&self) -> Option<&str> {
        match self {
            Error::Db(sqlx::Error::Database(d)) if d.code().as_deref() == Some("23505") => {
                Some(d.constraint().unwrap_or(""))
            }
            _ => None,
        }
    }
}

/// Parses a status or operation column.
pub(crate) fn parse<T: std::str::FromStr<Err = String>>(s: &str) -> Result<T> {
    s.parse().map_err(Error::Corrupt)
}

/// For the rest of the caller's transaction, plans take indexes over
/// sequential scans. The finishing statements touch a few rows by key; with
/// statistics that lag a fast-growing table the planner would otherwise
/// hash-join them against a scan of every subtask, history included.
pub async fn prefer_index_scans(conn: &mut sqlx::PgConnection) -> Result<()> {
    sqlx::query!("set local enable_seqscan = off",)
        .execute(conn)
        .await?;
    Ok(())
}

/// The channel that wakes idle workers: something became READY.
pub const READY_CHANNEL: &str = "taskd_ready";
/// The channel that tells a worker a subtask it runs was cancelled; the
/// payload is the subtask id.
pub const CANCEL_CHANNEL: &str = "taskd_cancel";

/// How a commit that makes subtasks READY wakes the workers (setting
/// `TASKD_NOTIFY`, read once per process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Notify only while some worker is idle (marked so in `worker.idle`):
    /// no notification, and no cluster-wide notify lock in the commit,
    /// while every worker is busy. The default.
    Idle,
    /// Notify on every such commit.
    Always,
    /// Never notify: idle workers find new work by polling alone.
    Off,
}

impl Wake {
    pub fn as_str(self) -> &'static str {
        match self {
            Wake::Idle => "idle",
            Wake::Always => "always",
            Wake::Off => "off",
        }
    }
}

impl std::str::FromStr for Wake {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "idle" => Ok(Wake::Idle),
            "always" => Ok(Wake::Always),
            "off" => Ok(Wake::Off),
            other => Err(format!(
                "unknown notify mode {other:?}; expected idle, always or off"
            )),
        }
    }
}

static WAKE: std::sync::OnceLock<Wake> = std::sync::OnceLock::new();

/// This process's wake-up mode: `TASKD_NOTIFY` (idle, always or off;
/// idle when unset or not one of these, with a warning).
pub fn wake_mode() -> Wake {
    *WAKE.get_or_init(|| match std::env::var("TASKD_NOTIFY") {
        Err(_) => Wake::Idle,
        Ok(v) => v.parse().unwrap_or_else(|e: String| {
            tracing::warn!(error = %e, "TASKD_NOTIFY ignored; notifying idle workers");
            Wake::Idle
        }),
    })
}

/// Wakes idle workers as [`wake_mode`] says; delivered when the caller's
/// transaction commits, and collapsed with its duplicates.
pub async fn notify_ready(conn: &mut sqlx::PgConnection) -> Result<()> {
    if wake_mode() == Wake::Off {
        return Ok(());
    }
    sqlx::query("select taskd_wake($1)")
        .bind(wake_mode().as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// Tells the worker holding `subtask` that it was cancelled.
pub async fn notify_cancel(conn: &mut sqlx::PgConnection, subtask: i64) -> Result<()> {
    sqlx::query!(
        "select pg_notify($1, $2)",
        CANCEL_CHANNEL,
        subtask.to_string(),
    )
    .execute(conn)
    .await?;
    Ok(())
}
