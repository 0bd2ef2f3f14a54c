//! The command line: subcommands, their flags, and what each one runs.

use crate::app;
use crate::config::{
    AgentArgs, DbArgs, EngineArgs, PasswordArgs, PruneArgs, ServeArgs, StandinArgs, UserAddArgs,
    UserPasswdArgs,
};
use crate::{auth, db, engine};
use anyhow::Context as _;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

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
    /// Tasks through the REST API: list, show, log, retry, rollback, skip,
    /// cancel, wait (a client of a running taskd).
    Tasks {
        #[command(flatten)]
        api: crate::client::ApiArgs,
        #[command(subcommand)]
        command: crate::client::TasksCommand,
    },
    /// Operations through the REST API: restart, start or stop a server,
    /// restart an agent; `--wait` follows the task with its progress.
    Ops {
        #[command(flatten)]
        api: crate::client::ApiArgs,
        #[command(subcommand)]
        command: crate::client::OpsCommand,
    },
    /// Probe a taskd endpoint and exit 0 when it answers 200 (a container's
    /// health check: `taskd health --url http://127.0.0.1:8080/readyz`).
    Health {
        #[command(flatten)]
        probe: HealthArgs,
    },
    /// Run a stand-in observer: listen on a TCP port until SIGTERM (run by
    /// `taskd agent`).
    #[command(hide = true)]
    ObserverStandin {
        #[command(flatten)]
        standin: StandinArgs,
    },
}

/// What `taskd health` probes.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthArgs {
    /// The URL to GET: the API's `/readyz` or `/healthz`, or an agent's
    /// `/api/v1/status`.
    #[arg(
        long,
        env = "TASKD_HEALTH_URL",
        default_value = "http://127.0.0.1:8080/readyz"
    )]
    pub url: url::Url,
    /// Seconds to wait for the answer.
    #[arg(long, env = "TASKD_HEALTH_TIMEOUT_SECS", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_secs: u64,
}

/// GETs `args.url`; Ok when it answers 200, else an error naming the URL and
/// what it answered.
async fn health(args: HealthArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(args.timeout_secs))
        .build()?;
    let url = args.url.clone();
    let answer = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{url} did not answer: {}", e.without_url()))?;
    let status = answer.status();
    if status == reqwest::StatusCode::OK {
        println!("{url}: 200 OK");
        Ok(())
    } else {
        anyhow::bail!("{url} answered {status}")
    }
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
/// and the user commands); and span export over OTLP when the `OTEL_*`
/// variables ask for it (see [`crate::telemetry`]), whose exporter the
/// caller shuts down before exiting. Refuses `OTEL_*` settings it cannot
/// honour, naming the variable.
pub fn init_tracing(cli: &Cli) -> Result<crate::telemetry::Telemetry, String> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let default = match cli.command {
        // The bench: so that logging does not weigh on its figures; user
        // commands: so that standard output is their one line.
        Command::Bench { .. }
        | Command::User { .. }
        | Command::Health { .. }
        | Command::Tasks { .. }
        | Command::Ops { .. }
        | Command::Prune { .. } => "warn",
        _ => "info",
    };
    // PostgreSQL's NOTICEs (e.g. refinery's "relation already exists,
    // skipping" on every start) are not news: warnings and up only.
    let default = format!("{default},tokio_postgres::connection=warn");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal, never into a log file or a pipe.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Logs go to stderr: stdout is for what a command prints (the demo's
    // instructions, the bench's JSON lines).
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = match cli.log_format {
        LogFormat::Human => fmt.boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let (otel, telemetry) = crate::telemetry::layer()?;
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .init();
    Ok(telemetry)
}

/// The settings of a process that serves the API (and, unless 0, runs
/// worker loops beside it).
fn serve_settings(engine: &EngineArgs, serve: &ServeArgs) -> app::Settings {
    app::Settings {
        engine: engine.to_config(),
        auth: serve.auth.to_config(),
        workers: serve.workers,
    }
}

/// `taskd serve`: migrations, the first admin, the API and (unless 0) the
/// worker loops, all stopped by one token on SIGTERM or Ctrl-C, or when any
/// of them fails.
async fn serve(db: DbArgs, engine: EngineArgs, serve: ServeArgs) -> anyhow::Result<()> {
    // The address first: a bad one must change nothing, not even create
    // the database.
    let listener = tokio::net::TcpListener::bind(&serve.listen)
        .await
        .with_context(|| format!("cannot listen on {}", serve.listen))?;
    let pool = app::open_database(&db).await?;
    app::bootstrap_users(&pool, &serve.auth).await?;
    app::run_until_signalled(pool, Some(listener), serve_settings(&engine, &serve)).await
}

/// `taskd worker`: one worker loop and the sweeper, no API.
async fn worker(db: DbArgs, engine: EngineArgs) -> anyhow::Result<()> {
    let pool = app::open_database(&db).await?;
    let settings = app::Settings {
        engine: engine.to_config(),
        auth: crate::auth::AuthConfig::default(),
        workers: 1,
    };
    app::run_until_signalled(pool, None, settings).await
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
            db::migrate(&db.database_url).await.with_context(|| {
                format!(
                    "cannot apply the migrations to {}",
                    crate::report::database_at(&db.database_url)
                )
            })?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Bench { args } => crate::bench::run(args).await,
        Command::Demo {
            db,
            engine,
            serve,
            demo,
        } => {
            let settings = serve_settings(&engine, &serve);
            crate::demo::run(db, settings, serve, demo).await
        }
        Command::Serve {
            db,
            engine,
            serve: s,
        } => serve(db, engine, s).await,
        Command::Worker { db, engine } => worker(db, engine).await,
        Command::User { command } => user(command).await,
        Command::Prune { db, prune: p } => prune(db, p).await,
        Command::Agent { agent } => {
            let listener = tokio::net::TcpListener::bind(agent.listen)
                .await
                .map_err(|source| crate::agent::ServerError::Bind {
                    addr: agent.listen,
                    source,
                })?;
            crate::agent::serve_agent(agent.to_config(), listener, app::shutdown_token()).await?;
            Ok(())
        }
        Command::Health { probe } => health(probe).await,
        Command::Tasks { api, command } => Ok(crate::client::tasks(api, command).await?),
        Command::Ops { api, command } => Ok(crate::client::ops(api, command).await?),
        Command::ObserverStandin { standin } => {
            let addr = std::net::SocketAddr::new(standin.bind, standin.port);
            crate::agent::standin::run(&standin.name, addr, app::shutdown_token()).await?;
            Ok(())
        }
    }
}

/// Parses the command line like `Cli::parse`, but a value refused by clap
/// that came from an environment variable names that variable.
pub fn parse_cli() -> Cli {
    parse_from(std::env::args_os(), |name| std::env::var_os(name))
}

fn parse_from<I, T>(args: I, env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Cli
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::FromArgMatches;
    let mut cmd = Cli::command();
    let parsed = cmd.try_get_matches_from_mut(args).and_then(|m| {
        let mut cli = Cli::from_arg_matches(&m)?;
        note_given(&mut cli, &m);
        Ok(cli)
    });
    match parsed {
        Ok(cli) => cli,
        Err(err) => {
            let note = crate::report::env_note(&cmd, &err, &env);
            match note {
                Some(note) => {
                    // Print clap's message with the note in its first line.
                    let rendered = err.render().to_string();
                    let mut lines = rendered.lines();
                    let first = lines.next().unwrap_or_default();
                    eprintln!("{first} {note}");
                    for l in lines {
                        eprintln!("{l}");
                    }
                    std::process::exit(2);
                }
                None => err.exit(),
            }
        }
    }
}

/// Tells the demo which shared settings the user gave (it moves the
/// others when their defaults are taken).
fn note_given(cli: &mut Cli, m: &clap::ArgMatches) {
    use clap::parser::ValueSource;
    let (Command::Demo { demo, .. }, Some(("demo", m))) = (&mut cli.command, m.subcommand()) else {
        return;
    };
    let given = |id: &str| {
        matches!(
            m.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    demo.given = crate::demo::Given {
        database_url: given("database_url"),
        listen: given("listen"),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_refused_environment_value_names_its_variable() {
        let cmd = Cli::command();
        let err = cmd
            .clone()
            .try_get_matches_from(["taskd", "serve", "--workers", "x"])
            .expect_err("x is no number");
        let env = |name: &str| (name == "TASKD_WORKERS").then(|| "x".into());
        assert_eq!(
            crate::report::env_note(&cmd, &err, &env).as_deref(),
            Some("(from the environment: TASKD_WORKERS=x)")
        );
        // A value given as a flag is not blamed on the variable.
        let none = |_: &str| None;
        assert_eq!(crate::report::env_note(&cmd, &err, &none), None);
    }
}
