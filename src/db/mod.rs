//! Database access: the connection pool and migrations applied under an
//! advisory lock so replicas that start together do not race.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};
use std::str::FromStr;
use std::time::Duration;

pub mod retry;

pub use retry::{retry, DbFault, Fault, Retry};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Advisory lock key held while migrating ("taskd" in ASCII).
const MIGRATION_LOCK: i64 = 0x74_6173_6b64;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid database URL: {0}")]
    Url(String),
    #[error("database connection failed: {0}")]
    Connect(#[from] tokio_postgres::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] refinery::Error),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
}

/// How long connecting to PostgreSQL may take before a command gives up
/// (a server that never answers would otherwise hang `taskd migrate`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Creates the database if needed, then applies every pending migration.
/// Concurrent callers serialize on an advisory lock, so two replicas
/// starting together both succeed.
pub async fn migrate(database_url: &str) -> Result<()> {
    tokio::time::timeout(CONNECT_TIMEOUT, ensure_database(database_url))
        .await
        .map_err(|_| Error::Timeout(CONNECT_TIMEOUT))??;
    let mut config =
        tokio_postgres::Config::from_str(database_url).map_err(|e| Error::Url(e.to_string()))?;
    config.connect_timeout(CONNECT_TIMEOUT);
    let (mut client, connection) = config.connect(tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "migration connection ended");
        }
    });
    client
        .execute("select pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let outcome = embedded::migrations::runner()
        .set_abort_divergent(true)
        .run_async(&mut client)
        .await;
    // The lock is released with the session as well; unlock explicitly so a
    // pooled connection never keeps it.
    let _ = client
        .execute("select pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    drop(client);
    let _ = driver.await;
    let report = outcome?;
    for m in report.applied_migrations() {
        tracing::info!(migration = %m, "applied migration");
    }
    Ok(())
}

/// Creates the database named in `database_url` when it does not exist yet
/// (connecting to the server's `postgres` database to do so), so a newcomer
/// needs nothing but a running PostgreSQL.
pub async fn ensure_database(database_url: &str) -> Result<()> {
    let options = PgConnectOptions::from_str(database_url)?;
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    match sqlx::PgConnection::connect_with(&options).await {
        Ok(conn) => {
            let _ = conn.close().await;
            Ok(())
        }
        Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("3D000") => {
            let mut admin =
                sqlx::PgConnection::connect_with(&options.clone().database("postgres")).await?;
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            match sqlx::query(&format!("create database {quoted}"))
                .execute(&mut admin)
                .await
            {
                Ok(_) => tracing::info!(database = %name, "created the database"),
                // Created meanwhile by another process: fine.
                Err(sqlx::Error::Database(d))
                    if matches!(d.code().as_deref(), Some("42P04") | Some("23505")) => {}
                Err(e) => return Err(e.into()),
            }
            let _ = admin.close().await;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Number of migrations this binary knows; `/readyz` compares it with the
/// database.
pub fn known_migrations() -> usize {
    embedded::migrations::runner().get_migrations().len()
}

/// True when every migration this binary knows is applied.
pub async fn migrations_applied(pool: &PgPool) -> Result<bool> {
    let applied: Option<i64> = sqlx::query_scalar("select count(*) from refinery_schema_history")
        .fetch_optional(pool)
        .await
        .or_else(|e| match &e {
            sqlx::Error::Database(d) if d.code().as_deref() == Some("42P01") => Ok(None),
            _ => Err(e),
        })?;
    Ok(applied.unwrap_or(0) as usize >= known_migrations())
}

/// A pool that pings every connection before handing it out, so a
/// connection PostgreSQL terminated (restart, `pg_terminate_backend`, a cut
/// network) is replaced instead of failing the request that drew it. A
/// ping only after idling saved a round trip per statement but let requests
/// hit dead connections (HTTP 500s after every mass termination): safety is
/// the default.
/// JIT is off: the engine's statements are short, and compiling them took
/// longer (~70 ms) than running them whenever the planner's estimate
/// crossed `jit_above_cost`.
pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(database_url)?
        .application_name("taskd")
        .options([("jit", "off")]);
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(true)
        .connect_with(options)
        .await?;
    Ok(pool)
}
