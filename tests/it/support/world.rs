//! The world of the end-to-end tests: the API, real agents on loopback
//! addresses running real processes, an inventory registered through the
//! API and a worker with the standard registry.

use super::app::TestApp;
use super::engine::fast_cfg;
use super::wait_for;
use rand::Rng;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use taskd::actions::Registry;
use taskd::agent::{
    kill_recorded_processes, spawn_agent, AgentClient, AgentConfig, OnShutdown, RunningAgent,
    StartObserver,
};
use taskd::engine::Worker;
use tokio_util::sync::CancellationToken;

pub const DEADLINE: Duration = Duration::from_secs(30);
pub const SQL_PORT: u16 = 2881;

pub fn own_ip() -> IpAddr {
    let mut r = rand::thread_rng();
    IpAddr::V4(Ipv4Addr::new(
        127,
        r.gen_range(1..=254),
        r.gen(),
        r.gen_range(1..=254),
    ))
}

/// A reference agent's settings for a test: a state directory of its own
/// (named after `test`), the stand-in observer from this build, stopped
/// processes at shutdown.
pub fn test_agent_config(test: &str) -> (std::path::PathBuf, AgentConfig) {
    let dir = std::env::temp_dir().join(format!(
        "taskd-{test}-it-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let mut cfg = AgentConfig::new(&dir);
    cfg.on_shutdown = OnShutdown::Stop;
    cfg.standin_exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_taskd"));
    cfg.stop_timeout = Duration::from_secs(3);
    (dir, cfg)
}

/// Registers host `host-{i}` at `ip` with `agent` over the API; its id.
pub async fn register_host(app: &TestApp, i: usize, ip: IpAddr, agent: &RunningAgent) -> i64 {
    let a = app
        .post_json(
            "/api/v2/compute/hosts",
            &json!({"name": format!("host-{i}"), "ip": ip.to_string(), "agentUrl": agent.url()}),
        )
        .await;
    a.ok()["id"].as_i64().expect("host id")
}

/// Starts host `i`'s observer through its agent and waits until it listens
/// and is active, as a RUNNING server's is (setup keys, not a step's).
pub async fn run_observer(client: &AgentClient, i: usize) {
    client
        .start_observer(
            &format!("setup:{i}"),
            &StartObserver {
                port: Some(SQL_PORT),
            },
        )
        .await
        .expect("observer started");
    client
        .wait_observer(
            "observer listening",
            |o| o.listening,
            tokio::time::Instant::now() + DEADLINE,
            &CancellationToken::new(),
        )
        .await
        .expect("observer listening");
    client
        .activate_observer(&format!("setup-activate:{i}"))
        .await
        .expect("observer activated");
}

/// The inventory and agents of one test: `n` hosts each with its agent and
/// one server in its own zone of cluster "protoss", and a worker running the
/// standard registry.
pub struct World {
    pub app: TestApp,
    pub agents: Vec<Option<RunningAgent>>,
    dirs: Vec<std::path::PathBuf>,
    pub clients: Vec<AgentClient>,
    pub hosts: Vec<i64>,
    pub servers: Vec<i64>,
    pub cluster: i64,
    stop: CancellationToken,
    worker: Option<tokio::task::JoinHandle<taskd::engine::Result<()>>>,
}

impl World {
    /// `statuses[i]` is server i's status; RUNNING servers get a running
    /// observer. `observer_cmd` replaces the stand-in observer on host 0.
    pub async fn new(statuses: &[&str], observer_cmd: Option<&str>) -> World {
        let app = TestApp::start().await;
        let http = reqwest::Client::new();
        let (mut agents, mut dirs, mut clients, mut hosts) = (vec![], vec![], vec![], vec![]);
        for i in 0..statuses.len() {
            let ip = own_ip();
            let (dir, mut cfg) = test_agent_config("actions");
            if i == 0 {
                cfg.observer_cmd = observer_cmd.map(str::to_string);
            }
            let agent = spawn_agent(cfg, SocketAddr::new(ip, 0))
                .await
                .expect("an agent");
            hosts.push(register_host(&app, i, ip, &agent).await);
            clients.push(agent.client(http.clone()));
            agents.push(Some(agent));
            dirs.push(dir);
        }
        let zones: Vec<(String, i64, &str)> = statuses
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("zone{}", i + 1), hosts[i], *s))
            .collect();
        let zones: Vec<(&str, i64, &str)> =
            zones.iter().map(|(z, h, s)| (z.as_str(), *h, *s)).collect();
        let c = app.add_cluster("protoss", &zones).await;
        let cluster = c["id"].as_i64().expect("cluster id");
        let servers = (0..statuses.len())
            .map(|i| {
                c["zones"][i]["servers"][0]["id"]
                    .as_i64()
                    .expect("server id")
            })
            .collect();
        for (i, s) in statuses.iter().enumerate() {
            if *s == "RUNNING" {
                run_observer(&clients[i], i).await;
            }
        }
        let stop = CancellationToken::new();
        let worker = Worker::new(app.db.pool.clone(), Registry::standard(), fast_cfg());
        let worker = Some(tokio::spawn(worker.run(stop.clone())));
        World {
            app,
            agents,
            dirs,
            clients,
            hosts,
            servers,
            cluster,
            stop,
            worker,
        }
    }

    pub fn op(&self, op: &str, server: usize) -> String {
        format!(
            "/api/v2/ob/clusters/{}/servers/{}/{op}",
            self.cluster, self.servers[server]
        )
    }

    /// Posts an operation; returns the new task's id.
    pub async fn post(&self, path: &str) -> i64 {
        let a = self.app.post(path).await;
        a.ok()["id"].as_i64().expect("a task id")
    }

    pub async fn task(&self, id: i64) -> Value {
        self.app
            .get(&format!("/api/v2/tasks/instances/{id}"))
            .await
            .ok()
            .clone()
    }

    /// Waits until the task is no longer RUNNING; returns it.
    pub async fn settled(&self, id: i64) -> Value {
        wait_for(&format!("task {id} to settle"), DEADLINE, || async {
            let t = self.task(id).await;
            (t["status"] != "RUNNING").then_some(t)
        })
        .await
    }

    pub async fn statuses(&self, server: usize) -> (String, String, String) {
        let row: (String, String, String) = sqlx::query_as(
            "select s.status, z.status, c.status from ob_server s \
             join ob_zone z on z.id = s.zone_id join ob_cluster c on c.id = s.cluster_id \
             where s.id = $1",
        )
        .bind(self.servers[server])
        .fetch_one(&self.app.db.pool)
        .await
        .expect("statuses");
        row
    }

    pub async fn observer_pid(&self, i: usize) -> Option<u32> {
        self.clients[i]
            .observer_status()
            .await
            .expect("observer status")
            .pid
    }

    /// Stops the world's in-process worker (for tests that bring their own).
    pub async fn stop_in_process_worker(&self) {
        self.stop.cancel();
    }

    pub async fn finish(mut self) {
        self.stop.cancel();
        if let Some(w) = self.worker.take() {
            let _ = w.await;
        }
        for a in self.agents.iter_mut() {
            if let Some(a) = a.take() {
                let _ = a.shutdown().await;
            }
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.cancel();
        for d in &self.dirs {
            let _ = kill_recorded_processes(d);
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
