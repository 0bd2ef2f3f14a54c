//! The command line: subcommands, their flags, and what each one runs.

use crate::config::{
    AgentArgs, DbArgs, EngineArgs, PasswordArgs, PruneArgs, ServeArgs, StandinArgs, UserAddArgs,
    UserPasswdArgs,
};
use crate::{actions::Registry, auth, db, engine, http};
use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "taskd",
    version,
    about = "A persistent DAG task service for OceanBase operations, on PostgreSQL",
    long_about = "taskd turns REST requests (restart, start or stop an OBServer, restart a \
                  host's agent) into task instances: DAGs of subtasks stored in PostgreSQL, \
                  claimed and run by worker loops in any number of processes, recovered when \
                  a process dies."
)]
pub struct Cli {
    /// Log format: human-readable lines or one JSON object per line.
    #[arg(long, env = "TASKD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the database migrations and exit.
    Migrate {
        #[command(flatten)]
        db: DbArgs,
    },
    /// One command for a newcomer: database, three agents, a demo
    /// inventory, the API and workers.
    Demo {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        serve: ServeArgs,
        #[command(flatten)]
        demo: crate::demo::DemoArgs,
    },
    /// Measure throughput and latency against a fresh database of its own.
    Bench {
        #[command(flatten)]
        args: crate::bench::BenchArgs,
    },
    /// Serve the REST API, with worker loops and the sweeper beside it
    /// unless `--workers 0` (an API-only replica).
    Serve {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Run worker loops and the sweeper only (a worker replica).
    Worker {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Remove finished tasks older than an age, with their subtasks, edges
    /// and logs (what the engine's retention does on its schedule), or with
    /// --dry-run say what would be removed.
    Prune {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        prune: PruneArgs,
    },
    /// Manage the API's users directly in the database (the first admin, a
    /// lost password); the REST API under /api/v2/iam does the rest.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Run the reference host agent: an HTTP server that runs this host's
    /// observer, pos proxy and agent processes as real OS processes.
    Agent {
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Run a stand-in observer: listen on a TCP port until SIGTERM (run by
    /// `taskd agent`).
    #[command(hide = true)]
    ObserverStandin {
        #[command(flatten)]
        standin: StandinArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user with its roles (applies the migrations first).
    Add {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        user: UserAddArgs,
    },
    /// Set a user's password.
    Passwd {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        user: UserPasswdArgs,
    },
}

/// Sets up logging: RUST_LOG filters (default `info`, `warn` for the bench
/// and the user commands).
pub fn init_tracing(cli: &Cli) {
    let default = match cli.command {
        // The bench: so that logging does not weigh on its figures; user
        // commands: so that standard output is their one line.
        Command::Bench { .. } | Command::User { .. } | Command::Prune { .. } => "warn",
        _ => "info",
    };
    let format = cli.log_format;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Logs go to stderr: stdout is for what a command prints (the demo's
    // instructions, the bench's JSON lines).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
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
        if let Some(pid) = c.id() {
            // SAFETY: kill(2) on a pid we spawned and have not reaped yet.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
    }
    for c in children.iter_mut() {
        if tokio::time::timeout(grace, c.wait()).await.is_err() {
            let _ = c.kill().await;
        }
    }
}

/// Runs `count` worker loops and one sweeper until `shutdown` fires. A loop
/// that fails cancels `shutdown`, so the whole process stops with it.
pub async fn run_worker_loops(
    pool: sqlx::PgPool,
    cfg: engine::EngineConfig,
    registry: Registry,
    count: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
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
pub fn advertised_address(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        let host = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        format!("{host}:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// Creates the first admin when `--admin-user` and `--admin-password` say
/// so, and warns when nobody could log in.
async fn bootstrap_users(
    pool: &sqlx::PgPool,
    args: &crate::config::AuthArgs,
) -> anyhow::Result<()> {
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

/// `taskd serve`: migrations, the first admin, the API and (unless 0) the
/// worker loops, all stopped by one token on SIGTERM or Ctrl-C, or when any
/// of them fails.
async fn serve(db: DbArgs, engine: EngineArgs, serve: ServeArgs) -> anyhow::Result<()> {
    db::migrate(&db.database_url).await?;
    let pool = db::connect(&db.database_url, db.db_max_connections).await?;
    bootstrap_users(&pool, &serve.auth).await?;
    let listener = tokio::net::TcpListener::bind(&serve.listen)
        .await
        .with_context(|| format!("cannot listen on {}", serve.listen))?;
    serve_with(pool, engine, serve, listener).await
}

/// Serves the API on `listener` with the worker loops beside it, until
/// SIGTERM or Ctrl-C.
pub async fn serve_with(
    pool: sqlx::PgPool,
    engine: EngineArgs,
    serve: ServeArgs,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<()> {
    let state = http::AppState::new(pool.clone(), advertised_address(listener.local_addr()?))
        .with_auth_config(serve.auth.to_config());
    let shutdown = shutdown_token();
    let server = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let served = http::serve(listener, state, shutdown.clone()).await;
            shutdown.cancel();
            served
        })
    };
    let workers = if serve.workers > 0 {
        tracing::info!(workers = serve.workers, "starting worker loops");
        run_worker_loops(
            pool.clone(),
            engine.to_config(),
            Registry::standard(),
            serve.workers,
            shutdown.clone(),
        )
        .await
    } else {
        tracing::info!("API-only replica: no worker loops");
        shutdown.cancelled().await;
        Ok(())
    };
    let served = server.await.context("HTTP server panicked")?;
    pool.close().await;
    workers?;
    served.context("HTTP server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// The password of `taskd user add` and `passwd`: from standard input
/// (without its trailing newline) or from `--password`, not both.
fn read_password(args: &PasswordArgs) -> anyhow::Result<String> {
    match (args.password_stdin, &args.password) {
        (true, Some(_)) => {
            anyhow::bail!("give --password-stdin or --password (TASKD_USER_PASSWORD), not both")
        }
        (true, None) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("cannot read the password from standard input")?;
            let password = text
                .strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text);
            Ok(password.to_string())
        }
        (false, Some(p)) => Ok(p.clone()),
        (false, None) => {
            anyhow::bail!(
                "give the password with --password-stdin or --password (TASKD_USER_PASSWORD)"
            )
        }
    }
}

/// `taskd user add` and `taskd user passwd`; one line on standard output
/// says what was done.
async fn user(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add { db, user } => {
            let password = read_password(&user.password)?;
            db::migrate(&db.database_url).await?;
            let pool = db::connect(&db.database_url, 2).await?;
            let new = auth::NewUser {
                name: user.name.clone(),
                password,
                roles: user.roles.clone(),
            };
            let added = auth::users::add_user(&pool, &new).await;
            pool.close().await;
            let added = added.with_context(|| format!("cannot add user {:?}", user.name))?;
            let roles: Vec<String> = added.roles.iter().map(ToString::to_string).collect();
            println!(
                "added user {:?} (id {}) with roles {}",
                added.name,
                added.id,
                roles.join(" ")
            );
            Ok(())
        }
        UserCommand::Passwd { db, user } => {
            let password = read_password(&user.password)?;
            db::migrate(&db.database_url).await?;
            let pool = db::connect(&db.database_url, 2).await?;
            let set = auth::users::set_password_by_name(&pool, &user.name, &password).await;
            pool.close().await;
            set.with_context(|| format!("cannot set the password of user {:?}", user.name))?;
            println!("password of user {:?} set", user.name);
            Ok(())
        }
    }
}

/// `taskd prune`: one line on standard output says what was (or would be)
/// removed.
async fn prune(db: DbArgs, args: PruneArgs) -> anyhow::Result<()> {
    db::migrate(&db.database_url).await?;
    let pool = db::connect(&db.database_url, 2).await?;
    let m = engine::Maintenance::new(pool.clone(), engine::HistoryConfig::default());
    let age = humantime_age(args.older_than);
    let line = if args.dry_run {
        let (cutoff, r) = m.preview(args.older_than).await?;
        format!(
            "would remove {} tasks, {} subtasks, {} edges and {} log lines: every task \
             finished before {} ({age} ago); nothing was changed",
            r.tasks,
            r.subtasks,
            r.edges,
            r.logs,
            cutoff.to_rfc3339()
        )
    } else {
        let (_, r) = m.prune_now(args.older_than).await?;
        format!(
            "removed {} tasks, {} subtasks, {} edges and {} log lines finished more than {age} ago",
            r.tasks, r.subtasks, r.edges, r.logs
        )
    };
    pool.close().await;
    println!("{line}");
    Ok(())
}

/// An age as `taskd prune` was given it: whole days, hours, minutes or
/// seconds.
fn humantime_age(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Migrate { db } => {
            db::migrate(&db.database_url).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Bench { args } => crate::bench::run(args).await,
        Command::Demo {
            db,
            engine,
            serve,
            demo,
        } => crate::demo::run(db, engine, serve, demo).await,
        Command::Serve {
            db,
            engine,
            serve: s,
        } => serve(db, engine, s).await,
        Command::Worker { db, engine } => {
            db::migrate(&db.database_url).await?;
            let pool = db::connect(&db.database_url, db.db_max_connections).await?;
            let shutdown = shutdown_token();
            run_worker_loops(pool, engine.to_config(), Registry::standard(), 1, shutdown).await
        }
        Command::User { command } => user(command).await,
        Command::Prune { db, prune: p } => prune(db, p).await,
        Command::Agent { agent } => {
            let listener = tokio::net::TcpListener::bind(agent.listen)
                .await
                .map_err(|source| crate::agent::ServerError::Bind {
                    addr: agent.listen,
                    source,
                })?;
            crate::agent::serve_agent(agent.to_config(), listener, shutdown_token()).await?;
            Ok(())
        }
        Command::ObserverStandin { standin } => {
            let addr = std::net::SocketAddr::new(standin.bind, standin.port);
            crate::agent::standin::run(&standin.name, addr, shutdown_token()).await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_flag_has_an_environment_variable_and_help() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        for sub in cli.get_subcommands() {
            assert!(sub.get_about().is_some(), "{} has no help", sub.get_name());
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" || arg.is_positional() {
                    continue;
                }
                assert!(
                    arg.get_env().is_some(),
                    "taskd {} --{id} has no environment variable",
                    sub.get_name()
                );
                assert!(
                    arg.get_help().is_some(),
                    "taskd {} --{id} has no help",
                    sub.get_name()
                );
            }
        }
    }
}
