//! `taskd demo`: one command for a newcomer. It finds or starts a database
//! ([`database`]), starts six reference agents (each its own `taskd agent`
//! process on its own loopback address, 127.0.0.2 up unless `--host-ip`
//! moves them, on ports that are free: [`hosts`]), fills a demo inventory
//! ([`inventory`]: cluster `demo`, three zones of two servers, one server
//! per host) and runs the API with its workers until Ctrl-C or SIGTERM.
//! Whatever it started is stopped, and its temporary directory removed, on
//! every way out: a signal, a failure, or a signal while it starts.

mod database;
mod hosts;
mod inventory;

use crate::agent::AgentClient;
use crate::app::Settings;
use crate::config::{DbArgs, ServeArgs};
use anyhow::Context as _;
use clap::Args;
use hosts::{Agents, Layout, HOSTS, SERVERS_PER_ZONE, ZONES};
use sqlx::PgPool;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Directory for the demo agents' state, kept when the demo stops
    /// (default: in the demo's temporary directory, removed when it stops).
    #[arg(long, env = "TASKD_DEMO_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Port every demo agent listens on, each on its own loopback address
    /// (default: 62888, or a free one when that is taken).
    #[arg(long, env = "TASKD_DEMO_AGENT_PORT")]
    pub agent_port: Option<u16>,

    /// Loopback address of the first demo host; the others follow it
    /// (127.0.0.2 gives 127.0.0.2 to 127.0.0.7). Each host's agent and
    /// observer listen on its address, so two demos (or test runs) with
    /// different addresses share one machine.
    #[arg(long, env = "TASKD_DEMO_HOST_IP", default_value_t = Ipv4Addr::new(127, 0, 0, 2))]
    pub host_ip: Ipv4Addr,

    /// SQL port of every demo observer, its RPC port the next one
    /// (default: 2881, or a free one when that is taken).
    #[arg(long, env = "TASKD_DEMO_OBSERVER_PORT")]
    pub observer_port: Option<u16>,

    /// Where the demo looks for a running PostgreSQL (user postgres, no
    /// password) when no --database-url / DATABASE_URL is given; when none
    /// answers there, it starts a private one of its own.
    #[arg(
        long,
        env = "TASKD_DEMO_LOCAL_POSTGRES",
        default_value = "127.0.0.1:5432"
    )]
    pub local_postgres: SocketAddr,

    /// Which shared settings the user gave, as opposed to their defaults
    /// (filled in by `report::parse_cli`).
    #[arg(skip)]
    pub given: Given,
}

/// Whether `--database-url` and `--listen` came from the command line or
/// the environment: the demo moves only what the user did not choose.
#[derive(Debug, Clone, Copy, Default)]
pub struct Given {
    pub database_url: bool,
    pub listen: bool,
}

/// What the demo started, stopped and removed by [`Leftovers::clean`] in
/// reverse order of starting.
struct Leftovers {
    temp: PathBuf,
    cluster: Option<database::PrivateCluster>,
    agents: Option<Agents>,
}

impl Leftovers {
    async fn clean(self) {
        if let Some(agents) = self.agents {
            agents.stop().await;
        }
        if let Some(cluster) = self.cluster {
            cluster.stop().await;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.temp) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("taskd: cannot remove {}: {e}", self.temp.display());
            }
        }
    }
}

pub async fn run(
    db: DbArgs,
    settings: Settings,
    serve: ServeArgs,
    demo: DemoArgs,
) -> anyhow::Result<()> {
    // Registered first: a signal while the demo starts stops it cleanly too.
    let shutdown = crate::app::shutdown_token();
    let temp = std::env::temp_dir().join(format!(
        "taskd-demo-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&temp).with_context(|| format!("cannot create {}", temp.display()))?;
    let mut left = Leftovers {
        temp,
        cluster: None,
        agents: None,
    };
    let started = tokio::select! {
        s = start(&db, &serve, &demo, &mut left) => Some(s),
        _ = shutdown.cancelled() => None,
    };
    let outcome = match started {
        // A signal before the demo was up: nothing more to do.
        None => Ok(()),
        Some(Err(e)) => Err(e),
        Some(Ok((pool, listener))) => {
            crate::app::run_on(pool, Some(listener), settings, shutdown).await
        }
    };
    left.clean().await;
    outcome
}

/// The API's listener: `--listen` when given (an error naming it when
/// taken), else 127.0.0.1:8080 or, when that is taken, a free port.
async fn listen(serve: &ServeArgs, given: bool) -> anyhow::Result<(TcpListener, Option<String>)> {
    match TcpListener::bind(&serve.listen).await {
        Ok(l) => Ok((l, None)),
        Err(e) if given => Err(anyhow::Error::new(e).context(format!(
            "cannot listen on {} (--listen / TASKD_LISTEN)",
            serve.listen
        ))),
        Err(e) => {
            let l = TcpListener::bind("127.0.0.1:0")
                .await
                .context("cannot listen on 127.0.0.1:0")?;
            let note = format!(
                "API: {} is taken ({e}): using {} instead (--listen chooses)",
                serve.listen,
                l.local_addr()?
            );
            Ok((l, Some(note)))
        }
    }
}

/// Everything up to serving: addresses, database, inventory, agents; the
/// pool and the API's listener. What it starts goes into `left` as soon as
/// it runs.
async fn start(
    db: &DbArgs,
    serve: &ServeArgs,
    demo: &DemoArgs,
    left: &mut Leftovers,
) -> anyhow::Result<(PgPool, TcpListener)> {
    // Addresses first: a taken one must change nothing.
    let (listener, api_note) = listen(serve, demo.given.listen).await?;
    let (layout, mut notes) = Layout::choose(demo)?;
    notes.extend(api_note);
    for n in &notes {
        println!("{n}");
    }
    let given = demo.given.database_url.then_some(db.database_url.as_str());
    let database = database::choose(given, demo.local_postgres, &left.temp).await?;
    left.cluster = database.cluster;
    let url = database.url;
    let at = || crate::report::database_at(&url);
    crate::db::migrate(&url)
        .await
        .with_context(|| format!("cannot prepare {}", at()))?;
    let pool = crate::db::connect(&url, db.db_max_connections)
        .await
        .with_context(|| format!("cannot connect to {}", at()))?;
    let (admin, password) = inventory::demo_admin(&pool, &serve.auth).await?;
    let (cluster, servers, hosts) = inventory::inventory(&pool, layout).await?;
    let state = match &demo.state_dir {
        Some(d) => d.clone(),
        None => left.temp.join("agents"),
    };
    std::fs::create_dir_all(&state)
        .with_context(|| format!("cannot create {}", state.display()))?;
    let agents = left.agents.insert(Agents::start(&state, layout)?);
    let http = reqwest::Client::new();
    let mut hosts_by_server = Vec::new();
    for (server, running, host, sql_port) in &servers {
        let client = AgentClient::new(http.clone(), &layout.agent_url(*host))?;
        let port = u16::try_from(*sql_port).unwrap_or(layout.sql_port);
        agents
            .prepare(&client, *host, *running, port)
            .await
            .context("the demo agents did not start")?;
        hosts_by_server.push((*server, hosts[*host]));
    }
    let base = format!("http://{}", listener.local_addr()?);
    let (server, host) = hosts_by_server[0];
    println!();
    println!("taskd demo is running at {base}");
    println!(
        "  cluster `demo` (id {cluster}): zones zone1-zone{ZONES} of {SERVERS_PER_ZONE} servers, servers {:?} on hosts {hosts:?}, agents on {}-{} port {}, observers on port {}",
        servers.iter().map(|s| s.0).collect::<Vec<_>>(),
        layout.host_ip(0),
        layout.host_ip(HOSTS - 1),
        layout.agent_port,
        layout.sql_port,
    );
    println!("  database: {}", at());
    match &demo.state_dir {
        Some(d) => println!("  agent state and logs: {}", d.display()),
        None => println!(
            "  agent state and logs: {} (removed when the demo stops)",
            state.display()
        ),
    }
    println!("  user: {admin}, password: {password}");
    println!("  console: {base}/console (sign in as {admin})");
    println!();
    println!("Try:");
    println!("  curl -s -u {admin}:{password} -X POST {base}/api/v2/ob/clusters/{cluster}/servers/{server}/restart");
    println!("then watch it:");
    println!("  curl -s -u {admin}:{password} '{base}/api/v2/tasks/instances?sort=id,desc&size=1'");
    println!("  (agent restart: curl -s -u {admin}:{password} -X POST {base}/compute/hosts/{host}/agent/restart)");
    println!("Rolling restarts (taskd's extensions):");
    println!("  curl -s -u {admin}:{password} -X POST {base}/api/v2/ob/clusters/{cluster}/zones/zone1/restart");
    println!("  curl -s -u {admin}:{password} -X POST {base}/api/v2/ob/clusters/{cluster}/restart");
    println!(
        "  curl -s -u {admin}:{password} -X POST -H 'Content-Type: application/json' -d '{{\"hostIds\": {hosts:?}, \"parallelism\": 2}}' {base}/compute/hosts/agent/restart"
    );
    println!();
    println!("Ctrl-C stops the demo, its workers and its agents.");
    Ok((pool, listener))
}
