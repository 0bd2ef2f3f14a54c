//! The composition root: how a taskd process is assembled (database,
//! first admin, the API, worker loops and the sweeper) and how it stops.
//! `taskd serve`, `worker`, `demo` and `bench` and the integration tests
//! all build their process here, so there is one place to read it.

use crate::actions::Registry;
use crate::auth::{self, AuthConfig};
use crate::config::{AuthArgs, DbArgs};
use crate::{db, engine, http};
use anyhow::Context as _;
use sqlx::PgPool;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What a process runs beside its database pool.
#[derive(Debug, Clone)]
pub struct Settings {
    pub engine: engine::EngineConfig,
    pub auth: AuthConfig,
    /// Worker loops beside the API (0: an API-only replica).
    pub workers: usize,
}

/// A process, assembled and not yet running: the pool, the API's listener
/// when it serves one, and its worker loops.
pub struct App {
    pool: PgPool,
    api: Option<(TcpListener, http::AppState)>,
    engine: engine::EngineConfig,
    registry: Registry,
    workers: usize,
}

impl App {
    /// Assembles a process on `pool`: the API on `listener` when given (its
    /// advertised address taken from the listener), `settings.workers`
    /// worker loops with the standard actions.
    pub fn build(
        pool: PgPool,
        listener: Option<TcpListener>,
        settings: Settings,
    ) -> anyhow::Result<App> {
        let api = match listener {
            Some(l) => {
                let server = advertised_address(l.local_addr()?);
                let state =
                    http::AppState::new(pool.clone(), server).with_auth_config(settings.auth);
                Some((l, state))
            }
            None => None,
        };
        Ok(App {
            pool,
            api,
            engine: settings.engine,
            registry: Registry::standard(),
            workers: settings.workers,
        })
    }

    /// The address the API listens on, if it serves one.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Runs the API and the worker loops until `shutdown` fires or one of
    /// them fails (which cancels `shutdown`). The pool stays open: it is
    /// the caller's.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let App {
            pool,
            api,
            engine,
            registry,
            workers,
        } = self;
        let server = api.map(|(listener, state)| {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let served = http::serve(listener, state, shutdown.clone()).await;
                shutdown.cancel();
                served
            })
        });
        let worked = if workers > 0 {
            tracing::info!(workers, "starting worker loops");
            run_worker_loops(pool.clone(), engine, registry, workers, shutdown.clone()).await
        } else {
            tracing::info!("API-only replica: no worker loops");
            shutdown.cancelled().await;
            Ok(())
        };
        let served = match server {
            Some(s) => Some(s.await.context("HTTP server panicked")?),
            None => None,
        };
        worked?;
        if let Some(served) = served {
            served.context("HTTP server failed")?;
        }
        tracing::info!("stopped");
        Ok(())
    }

    /// [`App::run`] in a task of its own.
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        tokio::spawn(self.run(shutdown))
    }
}

/// A whole process: the [`App`] on `pool` until SIGTERM or Ctrl-C (or a
/// failure of its parts), then the pool closed.
pub async fn run_until_signalled(
    pool: PgPool,
    listener: Option<TcpListener>,
    settings: Settings,
) -> anyhow::Result<()> {
    run_on(pool, listener, settings, shutdown_token()).await
}

/// [`run_until_signalled`] with the caller's token (from
/// [`shutdown_token`], registered before the caller's own setup).
pub async fn run_on(
    pool: PgPool,
    listener: Option<TcpListener>,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let outcome = match App::build(pool.clone(), listener, settings) {
        Ok(app) => app.run(shutdown).await,
        Err(e) => Err(e),
    };
    pool.close().await;
    outcome
}

/// Applies the migrations and opens the pool of `db`.
pub async fn open_database(db: &DbArgs) -> anyhow::Result<PgPool> {
    let at = || crate::report::database_at(&db.database_url);
    db::migrate(&db.database_url)
        .await
        .with_context(|| format!("cannot apply the migrations to {}", at()))?;
    db::connect(&db.database_url, db.db_max_connections)
        .await
        .with_context(|| format!("cannot connect to {}", at()))
}

/// Creates the first admin when `--admin-user` and `--admin-password` say
/// so, and warns when nobody could log in.
pub async fn bootstrap_users(pool: &PgPool, args: &AuthArgs) -> anyhow::Result<()> {
    match args.admin() {
        Some((name, password)) => auth::ensure_admin(pool, name, password)
            .await
            .with_context(|| format!("cannot create the admin user {name:?}"))?,
        None if args.admin_password.is_some() => {
            tracing::warn!("TASKD_ADMIN_PASSWORD is set without TASKD_ADMIN_USER; ignored")
        }
        None => {}
    }
    if auth::users::count_users(pool).await? == 0 {
        tracing::warn!(
            "no user exists, so every API request will be refused: set TASKD_ADMIN_USER and \
             TASKD_ADMIN_PASSWORD, or run `taskd user add`"
        );
    }
    Ok(())
}

/// A token cancelled on SIGTERM or Ctrl-C: one token drives the graceful
/// shutdown of the server and the workers.
///
/// The handlers are registered before this returns, not later in a task: a
/// SIGTERM that arrives at once (a stand-in stopped right after it started)
/// must end the process cleanly, not by the signal's default action.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    #[cfg(unix)]
    let (term, int) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        )
    };
    tokio::spawn(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = recv_signal(term, "SIGTERM") => {}
            _ = recv_signal(int, "SIGINT") => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown signal received");
        t.cancel();
    });
    token
}

/// Waits for one delivery of a registered signal; never returns when it
/// could not be registered.
#[cfg(unix)]
async fn recv_signal(sig: std::io::Result<tokio::signal::unix::Signal>, name: &str) {
    match sig {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(e) => {
            tracing::error!(error = %e, signal = name, "cannot listen for a signal");
            std::future::pending::<()>().await
        }
    }
}

/// Stops child processes gracefully: SIGTERM to all, then up to `grace`
/// for each to exit before it is killed.
pub async fn terminate_children(
    children: &mut [tokio::process::Child],
    grace: std::time::Duration,
) {
    for c in children.iter() {
        // A pid we spawned and have not reaped yet.
        if let Some(pid) = c.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    for c in children.iter_mut() {
        if tokio::time::timeout(grace, c.wait()).await.is_err() {
            let _ = c.kill().await;
        }
    }
}

/// Runs `count` worker loops, one sweeper and the history maintenance pass
/// until `shutdown` fires. A loop that fails cancels `shutdown`, so the
/// whole process stops with it.
async fn run_worker_loops(
    pool: PgPool,
    cfg: engine::EngineConfig,
    registry: Registry,
    count: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    crate::metrics::METRICS.touch_classes(registry.class_names());
    let sweeper = engine::Sweeper::new(pool.clone(), cfg.clone());
    let sweep = tokio::spawn(sweeper.run(shutdown.clone()));
    let maintenance = engine::Maintenance::new(pool.clone(), cfg.history.clone());
    let history = tokio::spawn(maintenance.run(shutdown.clone()));
    let depth = tokio::spawn(crate::metrics::refresh_queue_depth(
        pool.clone(),
        std::time::Duration::from_secs(5),
        shutdown.clone(),
    ));
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..count {
        let worker = engine::Worker::new(pool.clone(), registry.clone(), cfg.clone());
        loops.spawn(worker.run(shutdown.clone()));
    }
    let mut failure = None;
    while let Some(joined) = loops.join_next().await {
        let outcome = match joined {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => anyhow::Error::from(e).context("worker loop failed"),
            Err(e) => anyhow::Error::from(e).context("worker loop panicked"),
        };
        tracing::error!(error = %format!("{outcome:#}"), "stopping the process");
        shutdown.cancel();
        failure.get_or_insert(outcome);
    }
    shutdown.cancel();
    let _ = sweep.await;
    let _ = history.await;
    let _ = depth.await;
    failure.map_or(Ok(()), Err)
}

/// The address this server gives as `server` and `executor`: the bound
/// address, or the host name with the port when bound to every interface.
fn advertised_address(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("{}:{}", crate::engine::host_name(), addr.port())
    } else {
        addr.to_string()
    }
}
