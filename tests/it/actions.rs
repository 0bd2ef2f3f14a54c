//! The four operations end to end with their real actions: the API, a worker
//! with the standard registry, and real agents on loopback running real
//! processes.

use crate::app::TestApp;
use crate::support::engine::fast_cfg;
use crate::support::wait_for;
use rand::Rng;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use taskd::actions::Registry;
use taskd::agent::protocol::{AGENT_PROCESSES, POS_PROXY};
use taskd::agent::{
    kill_recorded_processes, process, spawn_agent, AgentClient, AgentConfig, FaultSpec, OnShutdown,
    Operation, RunningAgent, StartObserver,
};
use taskd::engine::Worker;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(30);
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

fn subtask<'a>(task: &'a Value, name: &str) -> &'a Value {
    task["subtasks"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no subtask {name} in {task:#}"))
}

fn pids(status: &taskd::agent::AgentStatus, names: &[&str]) -> Vec<Option<u32>> {
    names
        .iter()
        .map(|n| status.process(n).and_then(|p| p.pid))
        .collect()
}

#[tokio::test]
async fn stop_start_restart_and_agent_restart_do_real_work() {
    let w = World::new(&["RUNNING", "RUNNING"], None).await;
    let pid0 = w.observer_pid(0).await.expect("observer running");

    let t = w.settled(w.post(&w.op("stop", 0)).await).await;
    assert_eq!(t["status"], "SUCCESSFUL", "{t:#}");
    let o = w.clients[0].observer_status().await.unwrap();
    assert!(!o.is_running() && !o.listening, "{o:?}");
    assert!(
        !process::is_alive(pid0, None),
        "the observer process is gone"
    );
    assert_eq!(
        w.statuses(0).await,
        ("STOPPED".into(), "RUNNING".into(), "RUNNING".into())
    );

    let t = w.settled(w.post(&w.op("start", 0)).await).await;
    assert_eq!(t["status"], "SUCCESSFUL", "{t:#}");
    let o = w.clients[0].observer_status().await.unwrap();
    let pid1 = o.pid.expect("a new observer process");
    assert!(o.is_running() && o.listening && o.active, "{o:?}");
    assert!(process::is_alive(pid1, None));
    assert_ne!(pid1, pid0);
    assert_eq!(w.statuses(0).await.0, "RUNNING");

    let t = w.settled(w.post(&w.op("restart", 0)).await).await;
    assert_eq!(t["status"], "SUCCESSFUL", "{t:#}");
    let pid2 = w.observer_pid(0).await.expect("observer running");
    assert_ne!(pid2, pid1, "restart changes the pid");
    assert!(!process::is_alive(pid1, None));
    assert_eq!(
        w.statuses(0).await,
        ("RUNNING".into(), "RUNNING".into(), "RUNNING".into())
    );
    // The other server was never touched.
    assert!(w.observer_pid(1).await.is_some());

    let names: Vec<&str> = AGENT_PROCESSES.iter().copied().chain([POS_PROXY]).collect();
    let before = pids(&w.clients[1].status().await.unwrap(), &names);
    let t = w
        .settled(
            w.post(&format!("/compute/hosts/{}/agent/restart", w.hosts[1]))
                .await,
        )
        .await;
    assert_eq!(t["status"], "SUCCESSFUL", "{t:#}");
    let after = pids(&w.clients[1].status().await.unwrap(), &names);
    for (i, n) in names.iter().enumerate() {
        assert!(after[i].is_some(), "{n} runs after the restart");
        assert_ne!(after[i], before[i], "{n} was restarted");
    }
    let status: String = sqlx::query_scalar("select agent_status from host where id = $1")
        .bind(w.hosts[1])
        .fetch_one(&w.app.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "ONLINE");
    w.finish().await;
}

#[tokio::test]
async fn injected_failure_fails_the_task_retry_succeeds_and_rollback_restores() {
    let w = World::new(&["RUNNING"], None).await;
    // Three failures: the first run and both automatic retries.
    w.clients[0]
        .set_fault(&FaultSpec::fail(Operation::ObserverStart, 3))
        .await
        .unwrap();
    let id = w.post(&w.op("restart", 0)).await;
    let t = w.settled(id).await;
    assert_eq!(t["status"], "FAILED", "{t:#}");
    let s = subtask(&t, "Start observer process");
    assert_eq!(
        (s["status"].as_str(), s["runTime"].as_i64()),
        (Some("FAILED"), Some(3))
    );
    assert_eq!(
        w.statuses(0).await,
        ("RESTARTING".into(), "OPERATING".into(), "OPERATING".into())
    );
    let log = w
        .app
        .get(&format!(
            "/api/v2/tasks/instances/{id}/subtasks/{}/log",
            s["id"]
        ))
        .await;
    assert!(log.ok()["log"].as_str().unwrap().contains("RETRY run 3"));

    w.app
        .post(&format!("/api/v2/tasks/instances/{id}/retry"))
        .await
        .ok();
    let t = w.settled(id).await;
    assert_eq!(t["status"], "SUCCESSFUL", "{t:#}");
    assert_eq!(
        w.statuses(0).await,
        ("RUNNING".into(), "RUNNING".into(), "RUNNING".into())
    );
    assert!(w.clients[0].observer_status().await.unwrap().listening);

    // A fresh failure, then rollback.
    w.clients[0]
        .set_fault(&FaultSpec::fail(Operation::ObserverStart, 3))
        .await
        .unwrap();
    let id = w.post(&w.op("restart", 0)).await;
    assert_eq!(w.settled(id).await["status"], "FAILED");
    w.clients[0].clear_faults().await.unwrap();
    w.app
        .post(&format!("/api/v2/tasks/instances/{id}/rollback"))
        .await
        .ok();
    let t = w.settled(id).await;
    assert_eq!(
        (t["status"].as_str(), t["operation"].as_str()),
        (Some("SUCCESSFUL"), Some("ROLLBACK")),
        "{t:#}"
    );
    assert_eq!(
        w.statuses(0).await,
        ("RUNNING".into(), "RUNNING".into(), "RUNNING".into()),
        "rollback restores every status"
    );
    let o = w.clients[0].observer_status().await.unwrap();
    assert!(
        o.is_running() && o.listening && o.active,
        "rollback restarted the observer: {o:?}"
    );
    // Undone in reverse order: each ran step finished its rollback after
    // the steps after it.
    let ran = [
        "Prepare restart observer",
        "Stop server",
        "Stop observer process",
        "Start observer process",
    ];
    let finished: Vec<String> = ran
        .iter()
        .map(|n| subtask(&t, n)["finishTime"].as_str().unwrap().to_string())
        .collect();
    for i in 1..ran.len() {
        let (a, b) = (
            chrono::DateTime::parse_from_rfc3339(&finished[i - 1]).unwrap(),
            chrono::DateTime::parse_from_rfc3339(&finished[i]).unwrap(),
        );
        assert!(a >= b, "{} rolled back before {}", ran[i - 1], ran[i]);
    }
    for s in t["subtasks"].as_array().unwrap() {
        assert_eq!(s["status"], "PENDING", "{s:#}");
    }
    w.finish().await;
}

#[tokio::test]
async fn a_stalled_step_times_out() {
    let w = World::new(&["STOPPED"], None).await;
    w.clients[0]
        .set_fault(&FaultSpec::stall(Operation::ObserverStart, 1, 20_000))
        .await
        .unwrap();
    let id = w.post(&w.op("start", 0)).await;
    // Give the step a short timeout and no retries before it runs.
    sqlx::query(
        "update subtask_instance set timeout_s = 1, retry_limit = 0 \
         where task_id = $1 and name = 'Start observer process'",
    )
    .bind(id)
    .execute(&w.app.db.pool)
    .await
    .unwrap();
    let t = w.settled(id).await;
    assert_eq!(t["status"], "FAILED", "{t:#}");
    let s = subtask(&t, "Start observer process");
    assert_eq!(s["status"], "FAILED");
    let error: String = sqlx::query_scalar("select error from subtask_instance where id = $1")
        .bind(s["id"].as_i64().unwrap())
        .fetch_one(&w.app.db.pool)
        .await
        .unwrap();
    assert!(error.contains("timed out"), "{error}");
    w.finish().await;
}

#[tokio::test]
async fn cancel_stops_a_waiting_step() {
    // An observer that runs but never listens: "Wait observer active" waits.
    let w = World::new(&["STOPPED"], Some("exec sleep 600")).await;
    let id = w.post(&w.op("start", 0)).await;
    let waiting = wait_for("the wait step to run", DEADLINE, || async {
        let t = w.task(id).await;
        let s = subtask(&t, "Wait observer active").clone();
        (s["status"] == "RUNNING").then_some(s)
    })
    .await;
    w.app
        .post(&format!(
            "/api/v2/tasks/instances/{id}/subtasks/{}/cancel",
            waiting["id"]
        ))
        .await
        .ok();
    let t = w.settled(id).await;
    assert_eq!(t["status"], "FAILED", "{t:#}");
    let s = subtask(&t, "Wait observer active");
    assert_eq!(
        (s["status"].as_str(), s["operation"].as_str()),
        (Some("FAILED"), Some("CANCEL"))
    );
    w.finish().await;
}

#[tokio::test]
async fn an_unreachable_agent_fails_the_step_naming_the_host() {
    let mut w = World::new(&["RUNNING"], None).await;
    if let Some(a) = w.agents[0].take() {
        a.shutdown().await.unwrap();
    }
    let id = w.post(&w.op("stop", 0)).await;
    let t = w.settled(id).await;
    assert_eq!(t["status"], "FAILED", "{t:#}");
    let s = subtask(&t, "Stop server");
    assert_eq!(s["runTime"], 3, "the retry rules applied");
    let error: String = sqlx::query_scalar("select error from subtask_instance where id = $1")
        .bind(s["id"].as_i64().unwrap())
        .fetch_one(&w.app.db.pool)
        .await
        .unwrap();
    assert!(
        error.contains("host-0") && error.contains("unreachable"),
        "{error}"
    );
    w.finish().await;
}

/// A slow but reachable agent: the step's stop call stalls past the step's
/// timeout, which is longer than the agent client's old fixed 30 s. The run
/// must end as the step's timeout, not as "agent unreachable ... timed out".
#[tokio::test]
async fn a_slow_agent_is_reported_as_the_steps_timeout() {
    let w = World::new(&["STOPPED"], None).await;
    w.clients[0]
        .set_fault(&FaultSpec::stall(Operation::ObserverStart, 1, 120_000))
        .await
        .unwrap();
    let id = w.post(&w.op("start", 0)).await;
    sqlx::query(
        "update subtask_instance set timeout_s = 31, retry_limit = 0 \
         where task_id = $1 and name = 'Start observer process'",
    )
    .bind(id)
    .execute(&w.app.db.pool)
    .await
    .unwrap();
    let t = wait_for("the task to settle", Duration::from_secs(90), || async {
        let t = w.task(id).await;
        matches!(t["status"].as_str(), Some("SUCCESSFUL" | "FAILED")).then_some(t)
    })
    .await;
    assert_eq!(t["status"], "FAILED", "{t:#}");
    let s = subtask(&t, "Start observer process");
    let error: String = sqlx::query_scalar("select error from subtask_instance where id = $1")
        .bind(s["id"].as_i64().unwrap())
        .fetch_one(&w.app.db.pool)
        .await
        .unwrap();
    assert_eq!(error, "subtask timed out after 31 s");
    w.finish().await;
}
