//! The soak: three `taskd worker` processes and an API process (`taskd
//! serve --workers 0`), every one reaching a private PostgreSQL cluster
//! through the proxy, real `taskd agent` processes running stand-in
//! observers, restart tasks, and a fault every few seconds: a worker
//! SIGKILLed (and started again), every connection cut, the link
//! black-holed, and once the cluster itself restarted. Nothing is lost (every
//! task SUCCESSFUL), stuck (every subtask SUCCESSFUL within the deadline) or
//! answered 5xx, no two attempts of a step overlap at an agent, and a killed
//! worker's runs start again within the protocol's bound. The size is
//! `TASKD_PG_SOAK_TASKS` restart tasks in all (CI runs the small default).
//!
//! Also real agents through an 8 s restart of the cluster: no agent
//! operation is performed twice and no run fails for it.

use crate::actions::{own_ip, run_observer};
use crate::app::{client_for, creds};
use crate::faults::pgcluster::{PgCluster, StopMode};
use crate::faults::proxy::Proxy;
use crate::support::wait_for;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use taskd::agent::{AgentClient, CallRecord};
use taskd::db::Retry;
use tokio::process::{Child, Command};

/// The protocol's defaults the processes run with (taskd's own defaults).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
const DEAD_AFTER: Duration = Duration::from_secs(4);
const POLL_INTERVAL: Duration = Duration::from_secs(1);

fn free_port(ip: IpAddr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A file in `dir` for a child's stderr, read when something goes wrong.
fn log_file(dir: &Path, name: &str) -> Stdio {
    Stdio::from(std::fs::File::create(dir.join(name)).expect("a log file"))
}

/// A `taskd agent` process on its own loopback address.
struct Agent {
    child: Child,
    dir: PathBuf,
    client: AgentClient,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = taskd::agent::kill_recorded_processes(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The API as a caller sees it; every 5xx answer is kept.
#[derive(Clone)]
struct Api {
    base: String,
    http: reqwest::Client,
    server_errors: Arc<Mutex<Vec<String>>>,
}

impl Api {
    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Option<(u16, Value)> {
        let resp = match req.timeout(Duration::from_secs(30)).send().await {
            Ok(r) => r,
            Err(e) => {
                self.server_errors
                    .lock()
                    .unwrap()
                    .push(format!("{what}: no answer: {e}"));
                return None;
            }
        };
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status >= 500 {
            self.server_errors
                .lock()
                .unwrap()
                .push(format!("{what}: {status} {body}"));
        }
        Some((status, body))
    }

    async fn get(&self, path: &str) -> Option<(u16, Value)> {
        self.send(self.http.get(format!("{}{path}", self.base)), path)
            .await
    }

    async fn post(&self, path: &str, body: Value, key: Option<&str>) -> Option<(u16, Value)> {
        let mut req = self.http.post(format!("{}{path}", self.base));
        if !body.is_null() {
            req = req.json(&body);
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        self.send(req, path).await
    }

    fn server_errors(&self) -> Vec<String> {
        self.server_errors.lock().unwrap().clone()
    }
}

/// Processes, agents and the private cluster of one soak.
struct Fleet {
    pg: PgCluster,
    proxy: Proxy,
    /// Through the proxy: what every taskd process uses.
    proxied: String,
    /// The test's own pool, direct to the cluster.
    pool: PgPool,
    api: Api,
    _api_process: Child,
    agents: Vec<Agent>,
    workers: Vec<Child>,
    spawned: usize,
    logs: PathBuf,
    cluster: i64,
    servers: Vec<i64>,
}

impl Fleet {
    async fn start(hosts: usize, workers: usize) -> Fleet {
        let pg = PgCluster::start().await;
        let url = pg.database().await;
        let proxy = Proxy::for_url(&url).await;
        let proxied = proxy.url(&url);
        let pool = taskd::db::connect(&url, 4).await.unwrap();
        let logs = std::env::temp_dir().join(format!("taskd-soak-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&logs).unwrap();
        let password = taskd::auth::generate_password();
        taskd::auth::ensure_admin(&pool, "admin", &password)
            .await
            .unwrap();
        let listen = format!("127.0.0.1:{}", free_port([127, 0, 0, 1].into()));
        let api_process = Command::new(env!("CARGO_BIN_EXE_taskd"))
            .arg("serve")
            .env("DATABASE_URL", &proxied)
            .env("TASKD_LISTEN", &listen)
            .env("TASKD_WORKERS", "0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&logs, "api.log"))
            .kill_on_drop(true)
            .spawn()
            .expect("the API process");
        let api = Api {
            base: format!("http://{listen}"),
            http: client_for(Some(&creds("admin", &password))),
            server_errors: Arc::default(),
        };
        wait_for("the API to be ready", Duration::from_secs(30), || async {
            let r = api.http.get(format!("{}/readyz", api.base)).send().await;
            r.ok().filter(|r| r.status() == 200).map(drop)
        })
        .await;
        let mut agents = Vec::new();
        let mut zones = Vec::new();
        for i in 0..hosts {
            let ip = own_ip();
            let port = free_port(ip);
            let dir = logs.join(format!("agent-{i}"));
            let child = Command::new(env!("CARGO_BIN_EXE_taskd"))
                .args(["agent", "--listen", &format!("{ip}:{port}"), "--state-dir"])
                .arg(&dir)
                .env("TASKD_AGENT_STOP_TIMEOUT_MS", "3000")
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file(&logs, &format!("agent-{i}.log")))
                .kill_on_drop(true)
                .spawn()
                .expect("an agent process");
            let agent_url = format!("http://{ip}:{port}");
            let client = AgentClient::new(reqwest::Client::new(), &agent_url).unwrap();
            let never = tokio_util::sync::CancellationToken::new();
            let soon = tokio::time::Instant::now() + Duration::from_secs(30);
            taskd::agent::wait_until("the agent", || client.status(), |_| true, soon, &never)
                .await
                .unwrap();
            run_observer(&client, i).await;
            let body =
                json!({"name": format!("host-{i}"), "ip": ip.to_string(), "agentUrl": agent_url});
            let (status, host) = api.post("/api/v2/compute/hosts", body, None).await.unwrap();
            assert_eq!(status, 200, "{host}");
            zones.push(json!({"name": format!("zone{i}"),
                "servers": [{"hostId": host["data"]["id"], "status": "RUNNING"}]}));
            agents.push(Agent { child, dir, client });
        }
        let body = json!({"name": "soak", "obClusterId": 12000001, "zones": zones});
        let (status, c) = api.post("/api/v2/ob/clusters", body, None).await.unwrap();
        assert_eq!(status, 200, "{c}");
        let cluster = c["data"]["id"].as_i64().unwrap();
        let servers = (0..hosts)
            .map(|i| c["data"]["zones"][i]["servers"][0]["id"].as_i64().unwrap())
            .collect();
        let mut f = Fleet {
            pg,
            proxy,
            proxied,
            pool,
            api,
            _api_process: api_process,
            agents,
            workers: Vec::new(),
            spawned: 0,
            logs,
            cluster,
            servers,
        };
        for _ in 0..workers {
            let w = f.spawn_worker();
            f.workers.push(w);
        }
        f
    }

    /// A `taskd worker` with taskd's default timings.
    fn spawn_worker(&mut self) -> Child {
        self.spawned += 1;
        Command::new(env!("CARGO_BIN_EXE_taskd"))
            .arg("worker")
            .env("DATABASE_URL", &self.proxied)
            .env("TASKD_DB_MAX_CONNECTIONS", "6")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(
                &self.logs,
                &format!("worker-{}.log", self.spawned),
            ))
            .kill_on_drop(true)
            .spawn()
            .expect("a worker process")
    }

    fn restart_path(&self, server: i64) -> String {
        format!(
            "/api/v2/ob/clusters/{}/servers/{server}/restart",
            self.cluster
        )
    }

    /// RUNNING runs per worker process id.
    async fn running_by_pid(&self) -> HashMap<u32, Vec<(i64, i32)>> {
        let rows: Vec<(i64, i32, Option<String>)> =
            taskd::db::retry(Retry::Idempotent, "runs", || {
                sqlx::query_as(
                    "select id, run_time, executor from subtask_instance where status = 'RUNNING'",
                )
                .fetch_all(&self.pool)
            })
            .await
            .unwrap();
        let mut by = HashMap::<u32, Vec<(i64, i32)>>::new();
        for (id, rt, ex) in rows {
            // Worker ids are `{host}-{pid}-{hex}`.
            let pid = ex
                .as_deref()
                .and_then(|e| e.rsplit('-').nth(1))
                .and_then(|p| p.parse().ok());
            if let Some(pid) = pid {
                by.entry(pid).or_default().push((id, rt));
            }
        }
        by
    }

    /// SIGKILLs the worker holding the most runs, starts another, and
    /// returns how long each of its runs took to start again (from the
    /// kill to the new attempt's start, in the database).
    async fn kill_a_worker(&mut self) -> Vec<Duration> {
        let held = self.running_by_pid().await;
        let i = (0..self.workers.len())
            .max_by_key(|&i| {
                let pid = self.workers[i].id().unwrap_or(0);
                held.get(&pid).map_or(0, Vec::len)
            })
            .unwrap();
        let runs = held
            .get(&self.workers[i].id().unwrap_or(0))
            .cloned()
            .unwrap_or_default();
        let killed_at = Utc::now();
        let _ = self.workers[i].start_kill();
        let _ = self.workers[i].wait().await;
        self.workers[i] = self.spawn_worker();
        let mut took = Vec::new();
        for (id, rt) in runs {
            let started = wait_for(
                &format!("subtask {id}'s run after {rt} to start"),
                Duration::from_secs(30),
                || async {
                    let (run_time, status, start): (i32, String, Option<DateTime<Utc>>) =
                        sqlx::query_as(
                            "select run_time, status, start_time from subtask_instance where id = $1",
                        )
                        .bind(id)
                        .fetch_one(&self.pool)
                        .await
                        .ok()?;
                    if run_time > rt {
                        return start.map(Some);
                    }
                    // Finished before the kill landed: nothing to recover.
                    (status != "RUNNING").then_some(None)
                },
            )
            .await;
            if let Some(s) = started {
                took.push((s - killed_at).to_std().unwrap_or_default());
            }
        }
        took
    }

    /// Every agent's records of calls made by steps (setup calls left out).
    async fn step_records(&self) -> Vec<CallRecord> {
        let mut all = Vec::new();
        for a in &self.agents {
            let recs = a.client.records().await.expect("the agent's records");
            all.extend(recs.into_iter().filter(|r| subtask_of(r).is_some()));
        }
        all
    }

    async fn finish(mut self) {
        for w in &mut self.workers {
            let _ = w.start_kill();
            let _ = w.wait().await;
        }
        self.pool.close().await;
        let _ = std::fs::remove_dir_all(&self.logs);
        drop(self.pg);
    }

    /// The tail of every process's log, for a failure message.
    fn log_tails(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(&self.logs)
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                out += &format!("--- {:?}\n", e.file_name());
                for l in tail.into_iter().rev() {
                    out += l;
                    out += "\n";
                }
            }
        }
        out
    }
}

/// The subtask of a step's agent call (`{subtask}:{run_time}` keys).
fn subtask_of(r: &CallRecord) -> Option<(i64, i32)> {
    let (s, rt) = r.key.split_once(':')?;
    Some((s.parse().ok()?, rt.parse().ok()?))
}

/// No two attempts of one step were performed at an agent at once.
fn assert_no_overlapping_attempts(records: &[CallRecord]) {
    let mut by_step: HashMap<i64, Vec<&CallRecord>> = HashMap::new();
    for r in records {
        by_step.entry(subtask_of(r).unwrap().0).or_default().push(r);
    }
    for (sub, rs) in &by_step {
        for a in rs {
            for b in rs {
                if a.key != b.key {
                    assert!(
                        !(a.started_at < b.finished_at && b.started_at < a.finished_at),
                        "two attempts of subtask {sub} overlapped at an agent: {a:?} {b:?}"
                    );
                }
            }
        }
    }
}

/// Submits restart tasks (under Idempotency-Keys, as a careful caller
/// does), one at a time per server, until `total` have settled; returns
/// their ids. A task that fails is a failure of the soak.
async fn drive(api: Api, pool: PgPool, paths: Vec<String>, total: usize) -> Vec<i64> {
    let mut current: Vec<Option<i64>> = vec![None; paths.len()];
    let (mut submitted, mut all) = (0, Vec::new());
    let mut settled = 0;
    let deadline = Instant::now() + Duration::from_secs(120 + 3 * total as u64);
    while settled < total {
        assert!(
            Instant::now() < deadline,
            "{settled} of {total} tasks settled"
        );
        for (s, path) in paths.iter().enumerate() {
            match current[s] {
                None if submitted < total => {
                    let key = format!("soak-{submitted}");
                    let Some((200, t)) = api.post(path, Value::Null, Some(&key)).await else {
                        continue;
                    };
                    let id = t["data"]["id"].as_i64().unwrap();
                    submitted += 1;
                    give_room_for_kills(&pool, id).await;
                    current[s] = Some(id);
                    all.push(id);
                }
                Some(id) => {
                    let Some((200, t)) = api.get(&format!("/api/v2/tasks/instances/{id}")).await
                    else {
                        continue;
                    };
                    match t["data"]["status"].as_str() {
                        Some("SUCCESSFUL") => {
                            settled += 1;
                            current[s] = None;
                        }
                        Some("FAILED") => panic!("task {id} failed: {t:#}"),
                        _ => {}
                    }
                }
                None => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    all
}

/// Crash recovery is what is tested, not the retry limit: each step gets
/// room for several kills. Lock order as the engine's: the task row first.
async fn give_room_for_kills(pool: &PgPool, task: i64) {
    taskd::db::retry(Retry::Idempotent, "retry limit", || async {
        let mut tx = pool.begin().await?;
        sqlx::query("select id from task_instance where id = $1 for update")
            .bind(task)
            .execute(&mut *tx)
            .await?;
        sqlx::query("update subtask_instance set retry_limit = 20 where task_id = $1")
            .bind(task)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    })
    .await
    .unwrap();
}

/// Every task SUCCESSFUL, every subtask too: nothing lost, nothing stuck.
async fn assert_all_successful(pool: &PgPool, ids: &[i64]) {
    let open: i64 = sqlx::query_scalar(
        "select count(*) from task_instance where id = any($1) and status <> 'SUCCESSFUL'",
    )
    .bind(ids)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(open, 0, "every task SUCCESSFUL");
    let open: i64 =
        sqlx::query_scalar("select count(*) from subtask_instance where status <> 'SUCCESSFUL'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(open, 0, "every subtask SUCCESSFUL");
}

#[tokio::test]
async fn soak_through_cuts_black_holes_a_restart_and_worker_kills() {
    let total: usize = std::env::var("TASKD_PG_SOAK_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(42);
    let mut f = Fleet::start(6, 3).await;
    let started = Instant::now();
    let paths = f.servers.iter().map(|s| f.restart_path(*s)).collect();
    let driver = tokio::spawn(drive(f.api.clone(), f.pool.clone(), paths, total));
    let (mut kills, mut cuts, mut holes, mut restarts) = (0, 0, 0, 0);
    let mut recovered = Vec::new();
    // A fault every few seconds until the tasks are done and each kind
    // happened; the cluster restarts once, in the second round.
    let mut round = 0;
    while !driver.is_finished() || round < 3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        recovered.extend(f.kill_a_worker().await);
        kills += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
        f.proxy.cut_all();
        cuts += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
        f.proxy.black_hole();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        f.proxy.normal();
        holes += 1;
        if round == 1 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            f.pg.stop_for(Duration::from_secs(5), StopMode::Fast).await;
            restarts += 1;
        }
        round += 1;
    }
    let ids = match driver.await {
        Ok(ids) => ids,
        Err(e) => panic!("{e}\n{}", f.log_tails()),
    };
    println!(
        "{} restart tasks in {:?} through {kills} worker kills, {cuts} cuts, {holes} black holes, \
         {restarts} cluster restart(s)",
        ids.len(),
        started.elapsed()
    );
    assert_eq!(ids.len(), total);
    let errors = f.api.server_errors();
    assert!(errors.is_empty(), "5xx answers: {errors:#?}");
    assert_all_successful(&f.pool, &ids).await;
    let records = f.step_records().await;
    assert_no_overlapping_attempts(&records);
    let reruns: i64 =
        sqlx::query_scalar("select count(*) from subtask_instance where run_time > 1")
            .fetch_one(&f.pool)
            .await
            .unwrap();
    recovered.sort();
    let bound = SWEEP_INTERVAL + DEAD_AFTER + POLL_INTERVAL;
    println!(
        "{} agent calls, {reruns} steps ran more than once; a killed worker's run started \
         again after {:?} (min {:?}, median {:?}, max {:?}; bound {bound:?})",
        records.len(),
        recovered,
        recovered.first(),
        recovered.get(recovered.len() / 2),
        recovered.last()
    );
    assert!(!recovered.is_empty(), "a killed worker held runs");
    // The design bound (the sweeper's first look after the last heartbeat,
    // dead-after, then a claim) with a second of margin for a loaded host.
    let worst = *recovered.last().unwrap();
    assert!(
        worst <= bound + Duration::from_secs(1),
        "a killed worker's run took {worst:?} to start again"
    );
    f.finish().await;
}

#[tokio::test]
async fn real_agents_through_an_eight_second_restart_perform_no_operation_twice() {
    let f = Fleet::start(3, 2).await;
    let mut ids = Vec::new();
    for (i, s) in f.servers.iter().enumerate() {
        let (status, t) = f
            .api
            .post(
                &f.restart_path(*s),
                Value::Null,
                Some(&format!("outage-{i}")),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{t}");
        ids.push(t["data"]["id"].as_i64().unwrap());
    }
    // Every task has reached its agent before the cluster goes away.
    wait_for(
        "each task to call its agent",
        Duration::from_secs(30),
        || async {
            let recs = f.step_records().await;
            let hosts = f.agents.len();
            let busy: std::collections::HashSet<i64> = recs
                .iter()
                .filter_map(|r| subtask_of(r).map(|s| s.0))
                .collect();
            (busy.len() >= hosts).then_some(())
        },
    )
    .await;
    f.pg.stop_for(Duration::from_secs(8), StopMode::Fast).await;
    let back = Instant::now();
    for id in &ids {
        wait_for("the task to settle", Duration::from_secs(90), || async {
            let (_, t) = f.api.get(&format!("/api/v2/tasks/instances/{id}")).await?;
            (t["data"]["status"] != "RUNNING").then_some(())
        })
        .await;
    }
    println!("settled {:?} after PostgreSQL was back", back.elapsed());
    let errors = f.api.server_errors();
    assert!(errors.is_empty(), "5xx answers: {errors:#?}");
    assert_all_successful(&f.pool, &ids).await;
    let reruns: Vec<(String, i32)> =
        sqlx::query_as("select name, run_time from subtask_instance where run_time > 1")
            .fetch_all(&f.pool)
            .await
            .unwrap();
    assert!(
        reruns.is_empty(),
        "no run failed for the outage: {reruns:?}"
    );
    let records = f.step_records().await;
    let mut performed = HashMap::<(i64, String), usize>::new();
    for r in &records {
        let sub = subtask_of(r).unwrap().0;
        *performed
            .entry((sub, format!("{:?}", r.operation)))
            .or_default() += 1;
    }
    let twice: Vec<_> = performed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "agent operations performed twice: {twice:?}"
    );
    assert_no_overlapping_attempts(&records);
    f.finish().await;
}
