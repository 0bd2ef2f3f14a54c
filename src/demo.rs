//! `taskd demo`: one command for a newcomer. It creates and migrates the
//! database, starts six reference agents (each its own `taskd agent`
//! process on its own loopback address, 127.0.0.2 up unless `--host-ip`
//! moves them), fills a demo inventory (cluster `demo`, three zones of two
//! servers, one server per host) and runs the API with its workers until
//! Ctrl-C.

use crate::agent::protocol::StartObserver;
use crate::agent::AgentClient;
use crate::app::Settings;
use crate::config::{DbArgs, ServeArgs};
use crate::store::inventory::{
    self, AgentStatus, ClusterStatus, NewCluster, NewHost, NewServer, NewZone, ServerStatus,
    ZoneStatus,
};
use anyhow::Context as _;
use clap::Args;
use sqlx::PgPool;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Directory for the demo agents' state (default: a temporary one).
    #[arg(long, env = "TASKD_DEMO_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Port every demo agent listens on, each on its own loopback address.
    #[arg(long, env = "TASKD_DEMO_AGENT_PORT", default_value_t = 62888)]
    pub agent_port: u16,

    /// Loopback address of the first demo host; the others follow it
    /// (127.0.0.2 gives 127.0.0.2 to 127.0.0.7). Each host's agent and
    /// observer listen on its address, so two demos (or test runs) with
    /// different addresses share one machine.
    #[arg(long, env = "TASKD_DEMO_HOST_IP", default_value_t = Ipv4Addr::new(127, 0, 0, 2))]
    pub host_ip: Ipv4Addr,

    /// SQL port of every demo observer (its RPC port is the next one).
    #[arg(long, env = "TASKD_DEMO_OBSERVER_PORT", default_value_t = 2881)]
    pub observer_port: u16,
}

/// A demo server: id, whether it is RUNNING, its host's index, SQL port.
type DemoServer = (i64, bool, usize, i32);

/// Three zones of two servers each, one server per host.
const ZONES: usize = 3;
const SERVERS_PER_ZONE: usize = 2;
const HOSTS: usize = ZONES * SERVERS_PER_ZONE;

/// Where the demo's hosts are.
#[derive(Debug, Clone, Copy)]
struct Layout {
    first: Ipv4Addr,
    agent_port: u16,
    sql_port: u16,
}

impl Layout {
    fn of(demo: &DemoArgs) -> anyhow::Result<Layout> {
        let [a, _, _, d] = demo.host_ip.octets();
        if a != 127 || usize::from(d) + HOSTS > 256 || d == 0 {
            anyhow::bail!(
                "--host-ip {} must be a loopback address with room for {HOSTS} hosts after it",
                demo.host_ip
            );
        }
        if demo.observer_port == u16::MAX {
            anyhow::bail!("--observer-port must leave room for the RPC port after it");
        }
        Ok(Layout {
            first: demo.host_ip,
            agent_port: demo.agent_port,
            sql_port: demo.observer_port,
        })
    }

    fn host_ip(&self, i: usize) -> IpAddr {
        let [a, b, c, d] = self.first.octets();
        IpAddr::V4(Ipv4Addr::new(a, b, c, d + i as u8))
    }

    fn agent_url(&self, i: usize) -> String {
        format!(
            "http://{}",
            SocketAddr::new(self.host_ip(i), self.agent_port)
        )
    }
}

/// The demo agents, stopped (with their processes) when dropped or stopped.
struct Agents {
    children: Vec<Child>,
}

impl Agents {
    async fn start(dir: &std::path::Path, layout: Layout) -> anyhow::Result<Agents> {
        let exe = std::env::current_exe().context("cannot find the taskd binary")?;
        let mut children = Vec::new();
        for i in 0..HOSTS {
            let listen = SocketAddr::new(layout.host_ip(i), layout.agent_port);
            let state = dir.join(format!("agent-{}", i + 1));
            let child = Command::new(&exe)
                .arg("agent")
                .arg("--listen")
                .arg(listen.to_string())
                .arg("--state-dir")
                .arg(&state)
                .arg("--on-shutdown")
                .arg("stop")
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot start the agent on {listen}"))?;
            children.push(child);
        }
        Ok(Agents { children })
    }

    /// SIGTERM: each agent stops its processes and exits.
    async fn stop(mut self) {
        crate::app::terminate_children(&mut self.children, Duration::from_secs(15)).await;
    }
}

/// Waits for an agent to answer, then makes its observer match the
/// inventory: running and active for a RUNNING server.
async fn prepare_agent(
    client: &AgentClient,
    running: bool,
    i: usize,
    sql_port: u16,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let never = tokio_util::sync::CancellationToken::new();
    crate::agent::wait_until(
        "the demo agent",
        || client.status(),
        |_| true,
        deadline,
        &never,
    )
    .await
    .with_context(|| format!("agent {} did not come up", client.base_url()))?;
    if !running {
        return Ok(());
    }
    let stamp = chrono::Utc::now().timestamp_millis();
    let o = client.observer_status().await?;
    if !o.is_running() {
        client
            .start_observer(
                &format!("demo-start-{i}-{stamp}"),
                &StartObserver {
                    port: Some(sql_port),
                },
            )
            .await?;
    }
    let o = client
        .wait_observer("observer listening", |o| o.listening, deadline, &never)
        .await?;
    if !o.active {
        client
            .activate_observer(&format!("demo-activate-{i}-{stamp}"))
            .await?;
    }
    Ok(())
}

/// The demo inventory: reused when it exists (agent URLs refreshed),
/// created otherwise. Returns (cluster id, server ids and whether each is
/// RUNNING, host ids).
async fn inventory(
    pool: &PgPool,
    layout: Layout,
) -> anyhow::Result<(i64, Vec<DemoServer>, Vec<i64>)> {
    let mut tx = pool.begin().await?;
    let mut hosts = Vec::new();
    for i in 0..HOSTS {
        let name = format!("demo-host-{}", i + 1);
        let url = layout.agent_url(i);
        let id = match inventory::find_host_by_name(&mut *tx, &name).await? {
            Some(h) => {
                inventory::set_host_agent_online(&mut *tx, h.id, &url).await?;
                inventory::set_host_address(&mut *tx, h.id, &layout.host_ip(i).to_string()).await?;
                h.id
            }
            None => {
                inventory::insert_host(
                    &mut *tx,
                    &NewHost {
                        name,
                        ip: layout.host_ip(i).to_string(),
                        agent_url: url,
                        agent_status: AgentStatus::Online,
                    },
                )
                .await?
                .id
            }
        };
        hosts.push(id);
    }
    let cluster = match inventory::find_cluster_by_name(&mut *tx, "demo").await? {
        Some(c) => c.id,
        None => {
            let c = inventory::insert_cluster(
                &mut *tx,
                &NewCluster {
                    name: "demo".into(),
                    ob_cluster_id: 1,
                    status: ClusterStatus::Running,
                },
            )
            .await?;
            for z in 0..ZONES {
                let zone = inventory::insert_zone(
                    &mut *tx,
                    &NewZone {
                        cluster_id: c.id,
                        name: format!("zone{}", z + 1),
                        status: ZoneStatus::Running,
                    },
                )
                .await?;
                for s in 0..SERVERS_PER_ZONE {
                    let h = z * SERVERS_PER_ZONE + s;
                    inventory::insert_server(
                        &mut *tx,
                        &NewServer {
                            cluster_id: c.id,
                            zone_id: zone.id,
                            host_id: hosts[h],
                            ip: layout.host_ip(h).to_string(),
                            sql_port: i32::from(layout.sql_port),
                            rpc_port: i32::from(layout.sql_port) + 1,
                            status: ServerStatus::Running,
                        },
                    )
                    .await?;
                }
            }
            c.id
        }
    };
    let servers = inventory::servers_of_cluster(&mut *tx, cluster)
        .await?
        .into_iter()
        .map(|s| {
            let host = hosts.iter().position(|h| *h == s.host_id).unwrap_or(0);
            (s.id, s.status == ServerStatus::Running, host, s.sql_port)
        })
        .collect();
    tx.commit().await?;
    Ok((cluster, servers, hosts))
}

pub async fn run(
    db: DbArgs,
    settings: Settings,
    serve: ServeArgs,
    demo: DemoArgs,
) -> anyhow::Result<()> {
    crate::db::migrate(&db.database_url)
        .await
        .with_context(|| {
            format!(
                "cannot prepare the database at {}",
                redact(&db.database_url)
            )
        })?;
    let pool = crate::db::connect(&db.database_url, db.db_max_connections).await?;
    let dir = match &demo.state_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("taskd-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (admin, password) = demo_admin(&pool, &serve.auth).await?;
    let layout = Layout::of(&demo)?;
    let (cluster, servers, hosts) = inventory(&pool, layout).await?;
    let agents = Agents::start(&dir, layout).await?;
    let http = reqwest::Client::new();
    let mut hosts_by_server = Vec::new();
    for (i, (server, running, host, sql_port)) in servers.iter().enumerate() {
        let client = AgentClient::new(http.clone(), &layout.agent_url(*host))?;
        let port = u16::try_from(*sql_port).unwrap_or(layout.sql_port);
        if let Err(e) = prepare_agent(&client, *running, i, port).await {
            agents.stop().await;
            return Err(e.context("the demo agents did not start"));
        }
        hosts_by_server.push((*server, hosts[*host]));
    }
    let listener = tokio::net::TcpListener::bind(&serve.listen)
        .await
        .with_context(|| format!("cannot listen on {}", serve.listen))?;
    let base = format!("http://{}", listener.local_addr()?);
    let (server, host) = hosts_by_server[0];
    println!();
    println!("taskd demo is running at {base}");
    println!(
        "  cluster `demo` (id {cluster}): zones zone1-zone{ZONES} of {SERVERS_PER_ZONE} servers, servers {:?} on hosts {hosts:?}, agents on {}-{} port {}",
        servers.iter().map(|s| s.0).collect::<Vec<_>>(),
        layout.host_ip(0),
        layout.host_ip(HOSTS - 1),
        layout.agent_port
    );
    println!("  agent state and logs: {}", dir.display());
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
    let outcome = crate::app::run_until_signalled(pool, Some(listener), settings).await;
    agents.stop().await;
    outcome
}

/// The demo's admin: from TASKD_ADMIN_USER / TASKD_ADMIN_PASSWORD when set,
/// else `admin` with a new generated password (set even when `admin`
/// exists from an earlier demo, so the printed password works).
async fn demo_admin(
    pool: &PgPool,
    args: &crate::config::AuthArgs,
) -> anyhow::Result<(String, String)> {
    if let Some((name, password)) = args.admin() {
        crate::auth::ensure_admin(pool, name, password).await?;
        return Ok((name.to_string(), password.to_string()));
    }
    let password = crate::auth::generate_password();
    crate::auth::ensure_admin(pool, "admin", &password).await?;
    crate::auth::users::set_password_by_name(pool, "admin", &password).await?;
    Ok(("admin".into(), password))
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
