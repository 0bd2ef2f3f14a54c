//! The demo's hosts: their loopback addresses and the ports their agents
//! and observers use (the defaults when free, others the system hands out
//! when not, or an error naming the address and the flag when the user's
//! choice is taken), and the agent processes, whose error output the demo
//! forwards and quotes when one fails.

use super::DemoArgs;
use crate::agent::protocol::StartObserver;
use crate::agent::AgentClient;
use anyhow::Context as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Three zones of two servers each, one server per host.
pub const ZONES: usize = 3;
pub const SERVERS_PER_ZONE: usize = 2;
pub const HOSTS: usize = ZONES * SERVERS_PER_ZONE;

pub const DEFAULT_AGENT_PORT: u16 = 62888;
pub const DEFAULT_OBSERVER_PORT: u16 = 2881;

/// How long an agent, then its observer, may take to come up.
const COME_UP: Duration = Duration::from_secs(20);

/// Where the demo's hosts are.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    first: Ipv4Addr,
    pub agent_port: u16,
    pub sql_port: u16,
}

/// Why a port cannot be used: the address that is taken and the error.
fn taken(ips: &[IpAddr], port: u16) -> Option<(SocketAddr, std::io::Error)> {
    ips.iter().find_map(|ip| {
        let addr = SocketAddr::new(*ip, port);
        std::net::TcpListener::bind(addr).err().map(|e| (addr, e))
    })
}

/// `wanted` (the user's choice) when free on every address, else an error
/// naming the taken address and `flag`; with no choice, `default` when
/// free, else a port the system hands out on the first address that is
/// free on all of them (not in `avoid`). The note says what moved.
fn pick_port(
    ips: &[IpAddr],
    wanted: Option<u16>,
    default: u16,
    flag: &str,
    avoid: &[u16],
) -> anyhow::Result<(u16, Option<String>)> {
    if let Some(port) = wanted {
        return match taken(ips, port) {
            None => Ok((port, None)),
            Some((addr, e)) => Err(anyhow::anyhow!(
                "cannot listen on {addr} ({flag}): {e}; choose another port"
            )),
        };
    }
    let Some((addr, e)) = taken(ips, default) else {
        return Ok((default, None));
    };
    for _ in 0..100 {
        let port = std::net::TcpListener::bind(SocketAddr::new(ips[0], 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .with_context(|| format!("no free port on {}", ips[0]))?;
        // The observer's RPC port is the next one.
        if port < u16::MAX && !avoid.contains(&port) && taken(ips, port).is_none() {
            let note = format!("{addr} is taken ({e}): using port {port} instead ({flag} chooses)");
            return Ok((port, Some(note)));
        }
    }
    anyhow::bail!("{addr} is taken ({e}) and no other port is free on every demo address: choose one with {flag}")
}

impl Layout {
    /// The addresses from `--host-ip`, the ports from the flags or free
    /// ones; the notes say which default moved.
    pub fn choose(demo: &DemoArgs) -> anyhow::Result<(Layout, Vec<String>)> {
        let [a, _, _, d] = demo.host_ip.octets();
        if a != 127 || usize::from(d) + HOSTS > 256 || d == 0 {
            anyhow::bail!(
                "--host-ip {} must be a loopback address with room for {HOSTS} hosts after it",
                demo.host_ip
            );
        }
        if demo.observer_port == Some(u16::MAX) {
            anyhow::bail!("--observer-port must leave room for the RPC port after it");
        }
        let mut layout = Layout {
            first: demo.host_ip,
            agent_port: 0,
            sql_port: 0,
        };
        let ips: Vec<IpAddr> = (0..HOSTS).map(|i| layout.host_ip(i)).collect();
        let mut notes = Vec::new();
        let (agent_port, note) = pick_port(
            &ips,
            demo.agent_port,
            DEFAULT_AGENT_PORT,
            "--agent-port / TASKD_DEMO_AGENT_PORT",
            &[],
        )?;
        notes.extend(note.map(|n| format!("agents: {n}")));
        let (sql_port, note) = pick_port(
            &ips,
            demo.observer_port,
            DEFAULT_OBSERVER_PORT,
            "--observer-port / TASKD_DEMO_OBSERVER_PORT",
            &[agent_port, agent_port.wrapping_sub(1)],
        )?;
        notes.extend(note.map(|n| format!("observers: {n}")));
        layout.agent_port = agent_port;
        layout.sql_port = sql_port;
        Ok((layout, notes))
    }

    pub fn host_ip(&self, i: usize) -> IpAddr {
        let [a, b, c, d] = self.first.octets();
        IpAddr::V4(Ipv4Addr::new(a, b, c, d + i as u8))
    }

    pub fn agent_url(&self, i: usize) -> String {
        format!(
            "http://{}",
            SocketAddr::new(self.host_ip(i), self.agent_port)
        )
    }
}

/// One agent process and the last line it wrote on stderr.
struct Agent {
    child: Child,
    state: PathBuf,
    last_line: Arc<Mutex<Option<String>>>,
    forwarder: tokio::task::JoinHandle<()>,
}

/// The demo agents, stopped (with their processes) by [`Agents::stop`].
pub struct Agents {
    agents: Vec<Agent>,
    layout: Layout,
}

impl Agents {
    /// Starts one `taskd agent` per host, its state under `dir`; their
    /// stderr lines reach the demo's, prefixed with the host.
    pub fn start(dir: &Path, layout: Layout) -> anyhow::Result<Agents> {
        let exe = std::env::current_exe().context("cannot find the taskd binary")?;
        let mut agents = Agents {
            agents: Vec::new(),
            layout,
        };
        for i in 0..HOSTS {
            let listen = SocketAddr::new(layout.host_ip(i), layout.agent_port);
            let state = dir.join(format!("agent-{}", i + 1));
            let mut child = Command::new(&exe)
                .arg("agent")
                .arg("--listen")
                .arg(listen.to_string())
                .arg("--state-dir")
                .arg(&state)
                .arg("--on-shutdown")
                .arg("stop")
                .env("RUST_LOG", "warn")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot start the agent on {listen}"))?;
            let last_line = Arc::new(Mutex::new(None));
            let forwarder = match child.stderr.take() {
                Some(err) => tokio::spawn(forward(err, i + 1, last_line.clone())),
                None => tokio::spawn(async {}),
            };
            agents.agents.push(Agent {
                child,
                state,
                last_line,
                forwarder,
            });
        }
        Ok(agents)
    }

    /// Waits for host `i`'s agent to answer, then makes its observer match
    /// the inventory: running and active for a RUNNING server. An agent
    /// that exits or an observer that cannot listen fails at once, quoting
    /// its last error line.
    pub async fn prepare(
        &mut self,
        client: &AgentClient,
        i: usize,
        running: bool,
        sql_port: u16,
    ) -> anyhow::Result<()> {
        let host = format!("demo-host-{}", i + 1);
        let deadline = tokio::time::Instant::now() + COME_UP;
        loop {
            let answered = tokio::time::timeout(Duration::from_secs(2), client.status()).await;
            if matches!(answered, Ok(Ok(_))) {
                break;
            }
            let agent = &mut self.agents[i];
            if let Some(status) = agent.child.try_wait()? {
                // Its last words may still be on their way through the pipe.
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut agent.forwarder).await;
                anyhow::bail!(
                    "the agent of {host} ({}) exited ({status}){}",
                    client.base_url(),
                    quoted(agent.last_line.lock().expect("not poisoned").clone())
                );
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "the agent of {host} ({}) did not answer within {COME_UP:?}",
                    client.base_url()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !running {
            return Ok(());
        }
        let never = tokio_util::sync::CancellationToken::new();
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
            .wait_observer(
                "observer listening",
                |o| o.listening || !o.is_running(),
                deadline,
                &never,
            )
            .await?;
        if !o.listening {
            let log = self.agents[i].state.join("logs").join("observer.log");
            let last = last_line_of(&log).or(o.last_exit);
            anyhow::bail!(
                "the observer of {host} did not listen on {}{} (--observer-port / TASKD_DEMO_OBSERVER_PORT chooses another port)",
                SocketAddr::new(self.layout.host_ip(i), sql_port),
                quoted(last)
            );
        }
        if !o.active {
            client
                .activate_observer(&format!("demo-activate-{i}-{stamp}"))
                .await?;
        }
        Ok(())
    }

    /// SIGTERM: each agent stops its processes and exits.
    pub async fn stop(self) {
        let mut children: Vec<Child> = Vec::new();
        let mut forwarders = Vec::new();
        for a in self.agents {
            children.push(a.child);
            forwarders.push(a.forwarder);
        }
        crate::app::terminate_children(&mut children, Duration::from_secs(15)).await;
        for f in forwarders {
            let _ = tokio::time::timeout(Duration::from_secs(1), f).await;
        }
    }
}

/// `: line` when there is a line.
fn quoted(line: Option<String>) -> String {
    line.map(|l| format!(": {l}")).unwrap_or_default()
}

/// The last non-empty line of a log file, without the `taskd: ` prefix of
/// a failed command.
fn last_line_of(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    Some(line.trim().trim_start_matches("taskd: ").to_string())
}

/// Copies an agent's stderr to the demo's, each line prefixed with its
/// host, remembering the last one.
async fn forward(err: tokio::process::ChildStderr, host: usize, last: Arc<Mutex<Option<String>>>) {
    let mut lines = BufReader::new(err).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("demo-host-{host} agent: {line}");
        let line = line.trim().trim_start_matches("taskd: ").to_string();
        *last.lock().expect("not poisoned") = Some(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_default_port_moves_and_a_chosen_one_fails_naming_it() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let held = std::net::TcpListener::bind((ip, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        let (moved, note) = pick_port(&[ip], None, port, "--x", &[]).unwrap();
        assert_ne!(moved, port);
        assert!(note
            .unwrap()
            .contains(&format!("127.0.0.1:{port} is taken")));
        let e = pick_port(&[ip], Some(port), 1, "--x / TASKD_X", &[]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot listen on 127.0.0.1:{port} (--x / TASKD_X): "
            )),
            "{text}"
        );
        drop(held);
    }
}
