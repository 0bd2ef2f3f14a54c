//! The command line: subcommands, their flags, and what each one runs.

use crate::config::{AgentArgs, DbArgs, EngineArgs, StandinArgs};
use crate::{actions::Registry, db, engine};
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
    /// Run worker loops and the sweeper only (a worker replica).
    Worker {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        engine: EngineArgs,
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

/// Sets up logging: RUST_LOG filters (default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
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

/// Runs worker loops and a sweeper until `shutdown` fires.
pub async fn run_workers(
    pool: sqlx::PgPool,
    cfg: engine::EngineConfig,
    registry: Registry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let sweeper = engine::Sweeper::new(pool.clone(), cfg.clone());
    let sweep = tokio::spawn(sweeper.run(shutdown.clone()));
    let worker = engine::Worker::new(pool, registry, cfg);
    worker.run(shutdown).await?;
    let _ = sweep.await;
    Ok(())
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Migrate { db } => {
            db::migrate(&db.database_url).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Worker { db, engine } => {
            db::migrate(&db.database_url).await?;
            let pool = db::connect(&db.database_url, db.db_max_connections).await?;
            let shutdown = shutdown_token();
            run_workers(pool, engine.to_config(), Registry::standard(), shutdown).await
        }
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
