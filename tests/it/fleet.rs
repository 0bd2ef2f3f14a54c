//! Operations over many servers and hosts, end to end against real agents on
//! loopback: the rolling cluster restart, zone operations and the agent
//! batch, their exclusion in the database, failure, retry, skip and
//! rollback. Timing claims (overlap within a zone, zones in sequence, the
//! batch's concurrency limit) are read from the agents' own records.

use crate::actions::{own_ip, register_host, test_agent_config, SQL_PORT};
use crate::app::TestApp;
use crate::support::engine::fast_cfg;
use crate::support::wait_for;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use taskd::actions::Registry;
use taskd::agent::{
    kill_recorded_processes, spawn_agent, AgentClient, CallRecord, FaultSpec, Operation,
    RunningAgent, StartObserver,
};
use taskd::engine::Worker;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(90);

/// Hosts with real agents, optionally a cluster of `zones` zones of
/// `per_zone` servers (one per host, all RUNNING), and a worker.
struct Fleet {
    app: TestApp,
    agents: Vec<RunningAgent>,
    dirs: Vec<std::path::PathBuf>,
    clients: Vec<AgentClient>,
    hosts: Vec<i64>,
    cluster: i64,
    /// zone name -> its servers' (server id, host index).
    zones: Vec<(String, Vec<(i64, usize)>)>,
    stop: CancellationToken,
    worker: Option<tokio::task::JoinHandle<taskd::engine::Result<()>>>,
}

impl Fleet {
    async fn new(hosts: usize, zones: usize, per_zone: usize, worker: bool) -> Fleet {
        assert!(zones * per_zone <= hosts);
        let app = TestApp::start().await;
        let http = reqwest::Client::new();
        let (mut agents, mut dirs, mut clients, mut ids) = (vec![], vec![], vec![], vec![]);
        for i in 0..hosts {
            let ip = own_ip();
            let (dir, cfg) = test_agent_config("fleet");
            let agent = spawn_agent(cfg, SocketAddr::new(ip, 0))
                .await
                .expect("an agent");
            ids.push(register_host(&app, i, ip, &agent).await);
            clients.push(agent.client(http.clone()));
            agents.push(agent);
            dirs.push(dir);
        }
        let mut fleet = Fleet {
            app,
            agents,
            dirs,
            clients,
            hosts: ids,
            cluster: 0,
            zones: Vec::new(),
            stop: CancellationToken::new(),
            worker: None,
        };
        if zones > 0 {
            fleet.add_cluster(zones, per_zone).await;
        }
        if worker {
            let w = Worker::new(fleet.app.db.pool.clone(), Registry::standard(), fast_cfg());
            fleet.worker = Some(tokio::spawn(w.run(fleet.stop.clone())));
        }
        fleet
    }

    async fn add_cluster(&mut self, zones: usize, per_zone: usize) {
        let spec: Vec<Value> = (0..zones)
            .map(|z| {
                let servers: Vec<Value> = (0..per_zone)
                    .map(|s| json!({"hostId": self.hosts[z * per_zone + s], "status": "RUNNING"}))
                    .collect();
                json!({"name": format!("zone{}", z + 1), "servers": servers})
            })
            .collect();
        let c = self
            .app
            .post_json(
                "/api/v2/ob/clusters",
                &json!({"name": "protoss", "obClusterId": 12000001, "zones": spec}),
            )
            .await
            .ok()
            .clone();
        self.cluster = c["id"].as_i64().expect("cluster id");
        for (z, zone) in c["zones"].as_array().expect("zones").iter().enumerate() {
            let servers = zone["servers"]
                .as_array()
                .expect("servers")
                .iter()
                .enumerate()
                .map(|(s, v)| (v["id"].as_i64().expect("server id"), z * per_zone + s))
                .collect();
            self.zones
                .push((zone["name"].as_str().unwrap().to_string(), servers));
        }
        for i in 0..zones * per_zone {
            let c = &self.clients[i];
            c.start_observer(
                &format!("setup:{i}"),
                &StartObserver {
                    port: Some(SQL_PORT),
                },
            )
            .await
            .expect("observer started");
            c.wait_observer(
                "observer listening",
                |o| o.listening,
                tokio::time::Instant::now() + DEADLINE,
                &CancellationToken::new(),
            )
            .await
            .expect("observer listening");
            c.activate_observer(&format!("setup-activate:{i}"))
                .await
                .expect("observer activated");
        }
    }

    fn zone_hosts(&self, zone: usize) -> Vec<usize> {
        self.zones[zone].1.iter().map(|(_, h)| *h).collect()
    }

    async fn task(&self, id: i64) -> Value {
        self.app
            .get(&format!("/api/v2/tasks/instances/{id}"))
            .await
            .ok()
            .clone()
    }

    async fn settled(&self, id: i64) -> Value {
        wait_for(&format!("task {id} to settle"), DEADLINE, || async {
            let t = self.task(id).await;
            (t["status"] != "RUNNING").then_some(t)
        })
        .await
    }

    async fn post(&self, path: &str) -> i64 {
        self.app.post(path).await.ok()["id"]
            .as_i64()
            .expect("a task id")
    }

    async fn action(&self, task: i64, what: &str) {
        self.app
            .post(&format!("/api/v2/tasks/instances/{task}/{what}"))
            .await
            .ok();
    }

    async fn records(&self, host: usize) -> Vec<CallRecord> {
        self.clients[host].records().await.expect("agent records")
    }

    async fn observer_pid(&self, host: usize) -> Option<u32> {
        self.clients[host]
            .observer_status()
            .await
            .expect("observer status")
            .pid
    }

    async fn server_statuses(&self) -> Vec<String> {
        sqlx::query_scalar(
            "select status from ob_server where cluster_id = $1 \
             union all select status from ob_zone where cluster_id = $1 \
             union all select status from ob_cluster where id = $1",
        )
        .bind(self.cluster)
        .fetch_all(&self.app.db.pool)
        .await
        .expect("statuses")
    }

    async fn finish(mut self) {
        self.stop.cancel();
        if let Some(w) = self.worker.take() {
            let _ = w.await;
        }
        for a in std::mem::take(&mut self.agents) {
            let _ = a.shutdown().await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.cancel();
        for d in &self.dirs {
            let _ = kill_recorded_processes(d);
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The time a host spent restarting its observer: from the start of its
/// first stop to the end of its last start (agents' records).
fn restart_window(records: &[CallRecord]) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let first = records
        .iter()
        .filter(|r| r.operation == Operation::ObserverStop)
        .map(|r| r.started_at)
        .min()?;
    let last = records
        .iter()
        .filter(|r| r.operation == Operation::ObserverStart)
        .map(|r| r.finished_at)
        .max()?;
    Some((first, last))
}

fn did(records: &[CallRecord], op: Operation) -> bool {
    records.iter().any(|r| r.operation == op && r.status < 300)
}

fn subtask<'a>(task: &'a Value, name: &str) -> &'a Value {
    task["subtasks"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no subtask {name} in {task:#}"))
}

fn subtasks_named<'a>(task: &'a Value, name: &str) -> Vec<&'a Value> {
    task["subtasks"]
        .as_array()
        .expect("subtasks")
        .iter()
        .filter(|s| s["name"] == name)
        .collect()
}

fn ids(v: &Value) -> Vec<i64> {
    let mut out: Vec<i64> = v
        .as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_i64().expect("id"))
        .collect();
    out.sort_unstable();
    out
}

#[tokio::test]
async fn a_cluster_restart_rolls_zone_by_zone_restarting_every_observer() {
    let f = Fleet::new(6, 3, 2, true).await;
    let mut before = Vec::new();
    for h in 0..6 {
        before.push(f.observer_pid(h).await.expect("observer running"));
    }
    // Each observer takes a second to start, so that a zone whose servers
    // ran one after the other could not pass for parallel under load.
    for c in &f.clients {
        c.set_fault(&FaultSpec::stall(Operation::ObserverStart, 1, 1000))
            .await
            .unwrap();
    }
    let id = f
        .post(&format!("/api/v2/ob/clusters/{}/restart", f.cluster))
        .await;

    // The DAG's shape as the API shows it: one fan-in per zone over that
    // zone's branches, each zone after the previous one's fan-in.
    let t = f.task(id).await;
    assert_eq!(t["name"], "Restart OB cluster");
    assert_eq!(
        t["context"]["listMap"]["server_ids"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    let mut previous = vec![subtask(&t, "Prepare restart OB cluster")["id"]
        .as_i64()
        .unwrap()];
    for (zone, _) in &f.zones {
        let prepares = subtasks_named(&t, &format!("Prepare restart observer ({zone})"));
        assert_eq!(prepares.len(), 2, "{zone}: one branch per server");
        let mut idx: Vec<i64> = Vec::new();
        for p in &prepares {
            assert_eq!(
                ids(&p["upstreams"]),
                previous,
                "{zone} waits for the zone before"
            );
            idx.push(p["parallelIdx"].as_i64().unwrap());
        }
        idx.sort_unstable();
        assert_eq!(idx, [0, 1]);
        let lasts: Vec<i64> = subtasks_named(&t, &format!("Update observer status ({zone})"))
            .iter()
            .map(|s| s["id"].as_i64().unwrap())
            .collect();
        let fan_in = subtask(&t, &format!("Update zone status ({zone})"));
        let mut want = lasts.clone();
        want.sort_unstable();
        assert_eq!(ids(&fan_in["upstreams"]), want, "{zone}: one fan-in");
        previous = vec![fan_in["id"].as_i64().unwrap()];
    }
    assert_eq!(
        ids(&subtask(&t, "Sync cluster info")["upstreams"]),
        previous
    );

    let t = f.settled(id).await;
    assert_eq!(t["status"], "SUCCESSFUL", "{t:#}");
    // Every observer process was really stopped and a new one started.
    for (h, old) in before.iter().copied().enumerate() {
        let pid = f.observer_pid(h).await.expect("observer running again");
        assert_ne!(pid, old, "host {h} got a new observer process");
        assert!(
            !taskd::agent::process::is_alive(old, None),
            "host {h}'s old observer is gone"
        );
        let o = f.clients[h].observer_status().await.unwrap();
        assert!(o.listening && o.active, "host {h}: {o:?}");
    }
    assert!(f.server_statuses().await.iter().all(|s| s == "RUNNING"));
    // Agents' records: the servers of a zone overlap in time, zones never.
    let mut windows = Vec::new();
    for z in 0..3 {
        let mut w = Vec::new();
        for h in f.zone_hosts(z) {
            w.push(restart_window(&f.records(h).await).expect("a stop and a start"));
        }
        let latest_start = w.iter().map(|x| x.0).max().unwrap();
        let earliest_end = w.iter().map(|x| x.1).min().unwrap();
        assert!(
            latest_start < earliest_end,
            "zone {z}'s servers overlap: {w:?}"
        );
        windows.push(w);
    }
    for z in 1..3 {
        let end_before = windows[z - 1].iter().map(|x| x.1).max().unwrap();
        let start = windows[z].iter().map(|x| x.0).min().unwrap();
        assert!(
            end_before < start,
            "zone {} starts after zone {z} is back",
            z + 1
        );
    }
    f.finish().await;
}

#[tokio::test]
async fn a_failure_in_zone_two_leaves_zone_three_untouched_then_retry_finishes() {
    let f = Fleet::new(6, 3, 2, true).await;
    let failing = f.zone_hosts(1)[0];
    // The first run and both automatic retries fail.
    f.clients[failing]
        .set_fault(&FaultSpec::fail(Operation::ObserverStart, 3))
        .await
        .unwrap();
    let zone3: Vec<usize> = f.zone_hosts(2);
    let pids3: Vec<Option<u32>> = {
        let mut v = Vec::new();
        for h in &zone3 {
            v.push(f.observer_pid(*h).await);
        }
        v
    };
    let id = f
        .post(&format!("/api/v2/ob/clusters/{}/restart", f.cluster))
        .await;
    let t = f.settled(id).await;
    assert_eq!(t["status"], "FAILED", "{t:#}");
    let failed: Vec<&Value> = t["subtasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "FAILED")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["name"], "Start observer process (zone2)");
    // The other server of zone 2 finished its branch; zone 3 never began.
    let other = subtasks_named(&t, "Update observer status (zone2)");
    assert_eq!(
        other.iter().filter(|s| s["status"] == "SUCCESSFUL").count(),
        1
    );
    assert_eq!(
        subtask(&t, "Update zone status (zone2)")["status"],
        "PENDING"
    );
    for s in subtasks_named(&t, "Prepare restart observer (zone3)") {
        assert_eq!(s["status"], "PENDING");
    }
    for (i, h) in zone3.iter().enumerate() {
        let r = f.records(*h).await;
        assert!(
            !did(&r, Operation::ObserverStop) && !did(&r, Operation::ObserverDeactivate),
            "zone 3 host {h} untouched: {r:?}"
        );
        assert_eq!(f.observer_pid(*h).await, pids3[i]);
    }

    // The fault is spent: retry resumes from the failed branch.
    f.action(id, "retry").await;
    let t = f.settled(id).await;
    assert_eq!(t["status"], "SUCCESSFUL", "{t:#}");
    for h in &zone3 {
        assert!(did(&f.records(*h).await, Operation::ObserverStart));
    }
    // Zone 1 ran once: retry did not start the rollout over.
    for h in f.zone_hosts(0) {
        let stops = f
            .records(h)
            .await
            .iter()
            .filter(|r| r.operation == Operation::ObserverStop)
            .count();
        assert_eq!(stops, 1, "host {h} stopped once");
    }
    assert!(f.server_statuses().await.iter().all(|s| s == "RUNNING"));
    f.finish().await;
}

#[tokio::test]
async fn skipping_a_failed_server_step_lets_the_rollout_go_on() {
    let f = Fleet::new(4, 2, 2, true).await;
    let failing = f.zone_hosts(0)[1];
    f.clients[failing]
        .set_fault(&FaultSpec::fail(Operation::ObserverDeactivate, 3))
        .await
        .unwrap();
    let id = f
        .post(&format!("/api/v2/ob/clusters/{}/restart", f.cluster))
        .await;
    let t = f.settled(id).await;
    assert_eq!(t["status"], "FAILED", "{t:#}");
    let stuck = subtasks_named(&t, "Stop server (zone1)")
        .into_iter()
        .find(|s| s["status"] == "FAILED")
        .expect("the failed step")
        .clone();
    assert!(!did(
        &f.records(f.zone_hosts(1)[0]).await,
        Operation::ObserverStop
    ));
    f.action(id, &format!("subtasks/{}/skip", stuck["id"]))
        .await;
    let t = f.settled(id).await;
    assert_eq!(t["status"], "SUCCESSFUL", "{t:#}");
    for h in f.zone_hosts(1) {
        assert!(
            did(&f.records(h).await, Operation::ObserverStart),
            "zone 2 ran"
        );
    }
    f.finish().await;
}

#[tokio::test]
async fn rollback_undoes_in_reverse_topological_order_across_the_fan_in() {
    let f = Fleet::new(4, 2, 2, true).await;
    let failing = f.zone_hosts(1)[0];
    f.clients[failing]
        .set_fault(&FaultSpec::fail(Operation::ObserverStart, 3))
        .await
        .unwrap();
    let id = f
        .post(&format!("/api/v2/ob/clusters/{}/restart", f.cluster))
        .await;
    assert_eq!(f.settled(id).await["status"], "FAILED");
    let ran: Vec<i64> = f.task(id).await["subtasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] != "PENDING")
        .map(|s| s["id"].as_i64().unwrap())
        .collect();
    f.action(id, "rollback").await;
    let t = f.settled(id).await;
    assert_eq!(
        (t["status"].as_str(), t["operation"].as_str()),
        (Some("SUCCESSFUL"), Some("ROLLBACK")),
        "{t:#}"
    );
    let subs: HashMap<i64, &Value> = t["subtasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_i64().unwrap(), s))
        .collect();
    let finished =
        |id: i64| DateTime::parse_from_rfc3339(subs[&id]["finishTime"].as_str().unwrap()).unwrap();
    // Every edge between two steps that ran: the upstream was undone after
    // its downstream, the zone's fan-in included.
    let mut edges = 0;
    for &d in &ran {
        for u in ids(&subs[&d]["upstreams"]) {
            if ran.contains(&u) {
                assert!(finished(u) >= finished(d), "{u} undone after {d}");
                edges += 1;
            }
        }
    }
    let fan_in = subtask(&t, "Update zone status (zone1)")["id"]
        .as_i64()
        .unwrap();
    assert!(ran.contains(&fan_in), "zone 1's fan-in ran and was undone");
    assert!(edges > 10);
    for s in t["subtasks"].as_array().unwrap() {
        assert_eq!(s["status"], "PENDING", "{s:#}");
    }
    // Zone 2 was undone before zone 1 (agents' records): zone 1's last
    // call begins after zone 2's last call.
    let last = |r: Vec<CallRecord>| r.iter().map(|c| c.started_at).max().unwrap();
    let z1 = last(f.records(f.zone_hosts(0)[0]).await);
    let z2 = last(f.records(f.zone_hosts(1)[1]).await);
    assert!(z2 < z1, "zone 2 rolled back first");
    assert!(f.server_statuses().await.iter().all(|s| s == "RUNNING"));
    f.finish().await;
}

#[tokio::test]
async fn an_agent_batch_of_fifty_hosts_keeps_its_limit_and_a_failed_host_fails_alone() {
    let f = Fleet::new(50, 0, 0, true).await;
    let failing = 7;
    f.clients[failing]
        .set_fault(&FaultSpec::fail(Operation::AgentStopAll, 3))
        .await
        .unwrap();
    let a = f
        .app
        .post_json(
            "/compute/hosts/agent/restart",
            &json!({"hostIds": f.hosts, "parallelism": 5}),
        )
        .await;
    let id = a.ok()["id"].as_i64().unwrap();
    let t = f.settled(id).await;
    assert_eq!(t["status"], "FAILED", "{t:#}");
    let failed: Vec<&Value> = t["subtasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "FAILED")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["parallelIdx"], failing as i64);
    let finished = subtasks_named(&t, "Finish OCP agent operation");
    assert_eq!(
        finished
            .iter()
            .filter(|s| s["status"] == "SUCCESSFUL")
            .count(),
        49,
        "every other host finished"
    );
    // Each host's restart window from its agent's records: at most five at
    // once, and more than one (they do run in parallel).
    let mut events: Vec<(DateTime<Utc>, i32)> = Vec::new();
    for h in 0..50 {
        let r = f.records(h).await;
        let start = r
            .iter()
            .filter(|c| c.operation == Operation::PosProxyRestart)
            .map(|c| c.started_at)
            .min()
            .expect("every host began");
        let end = r.iter().map(|c| c.finished_at).max().unwrap_or(start);
        if h != failing {
            assert!(did(&r, Operation::AgentStartAll), "host {h} restarted");
        }
        events.push((start, 1));
        events.push((end, -1));
    }
    events.sort();
    let (mut now, mut most) = (0, 0);
    for (_, d) in events {
        now += d;
        most = most.max(now);
    }
    assert!(most <= 5, "at most five hosts at once, saw {most}");
    assert!(most > 1, "hosts ran in parallel");
    let online: i64 = sqlx::query_scalar("select count(*) from host where agent_status = 'ONLINE'")
        .fetch_one(&f.app.db.pool)
        .await
        .unwrap();
    assert_eq!(online, 49);
    f.finish().await;
}

/// Twenty concurrent requests, ten of each kind: exactly one task, every
/// other answer a 409 naming it.
async fn exactly_one_wins(app: &TestApp, a: (&str, Value), b: (&str, Value)) {
    let before = app.task_count().await;
    let mut calls = Vec::new();
    for i in 0..20 {
        let (path, body) = if i % 2 == 0 { a.clone() } else { b.clone() };
        let url = app.url(path);
        let client = app.client.clone();
        calls.push(tokio::spawn(async move {
            let req = client.post(url);
            let req = if body.is_null() { req } else { req.json(&body) };
            let r = req.send().await.expect("an answer");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.expect("json"))
        }));
    }
    let mut won = Vec::new();
    let mut refused = Vec::new();
    for c in calls {
        let (status, body) = c.await.unwrap();
        match status {
            200 => won.push(body["data"]["id"].as_i64().unwrap()),
            409 => refused.push(body),
            _ => panic!("unexpected {status}: {body:#}"),
        }
    }
    assert_eq!(won.len(), 1, "{a:?} vs {b:?}: {refused:#?}");
    assert_eq!(refused.len(), 19);
    for r in &refused {
        assert_eq!(r["error"]["code"], "TARGET_BUSY");
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("RUNNING task {}", won[0])), "{msg}");
    }
    assert_eq!(app.task_count().await, before + 1);
    // Free the target for the next pair.
    sqlx::query("update task_instance set status = 'FAILED', finish_time = now() where id = $1")
        .bind(won[0])
        .execute(&app.db.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn every_exclusion_is_refused_by_the_database_under_twenty_concurrent_requests() {
    // No worker: tasks stay RUNNING and hold their targets.
    let mut f = Fleet::new(4, 0, 0, false).await;
    f.add_cluster(2, 2).await;
    let c = f.cluster;
    let (s1, _) = f.zones[0].1[0];
    let none = Value::Null;
    let cluster = (format!("/api/v2/ob/clusters/{c}/restart"), none.clone());
    let zone1 = (
        format!("/api/v2/ob/clusters/{c}/zones/zone1/restart"),
        none.clone(),
    );
    let zone2 = (
        format!("/api/v2/ob/clusters/{c}/zones/zone2/stop"),
        none.clone(),
    );
    let server = (
        format!("/api/v2/ob/clusters/{c}/servers/{s1}/restart"),
        none.clone(),
    );
    let app = &f.app;
    let p = |x: &(String, Value)| (x.0.as_str().to_owned(), x.1.clone());
    for (a, b) in [
        (p(&cluster), p(&server)),
        (p(&zone1), p(&server)),
        (p(&zone1), p(&zone2)),
        (p(&cluster), p(&zone2)),
    ] {
        exactly_one_wins(app, (a.0.as_str(), a.1), (b.0.as_str(), b.1)).await;
    }
    let batch = (
        "/compute/hosts/agent/restart".to_string(),
        json!({"hostIds": f.hosts, "parallelism": 2}),
    );
    let single = (format!("/compute/hosts/{}/agent/restart", f.hosts[2]), none);
    exactly_one_wins(
        app,
        (batch.0.as_str(), batch.1),
        (single.0.as_str(), single.1),
    )
    .await;

    // A zone task and a server task of another zone do not conflict.
    let zone_task = app.post(&zone1.0).await.ok()["id"].as_i64().unwrap();
    let (s3, _) = f.zones[1].1[0];
    app.post(&format!("/api/v2/ob/clusters/{c}/servers/{s3}/restart"))
        .await
        .ok();
    // Each pair above could run only because the settled winner of the
    // pair before gave its keys back; a RUNNING one keeps them.
    app.post(&zone1.0).await.assert_error(409, "TARGET_BUSY");

    // A FAILED rollout holds nothing: a server operation on one of its
    // servers may run, and the rollout's retry is then refused, naming it.
    sqlx::query("update task_instance set status = 'FAILED', finish_time = now() where id = $1")
        .bind(zone_task)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let server_task = app
        .post(&format!("/api/v2/ob/clusters/{c}/servers/{s1}/restart"))
        .await
        .ok()["id"]
        .as_i64()
        .unwrap();
    let a = app
        .post(&format!("/api/v2/tasks/instances/{zone_task}/retry"))
        .await;
    a.assert_error(409, "TARGET_BUSY");
    let msg = a.body["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains(&format!("RUNNING task {server_task}")),
        "{msg}"
    );
    f.finish().await;
}

#[tokio::test]
async fn a_zone_stop_then_start_really_stops_and_starts_every_server_of_the_zone() {
    let f = Fleet::new(4, 2, 2, true).await;
    let c = f.cluster;
    let t = f
        .settled(
            f.post(&format!("/api/v2/ob/clusters/{c}/zones/zone2/stop"))
                .await,
        )
        .await;
    assert_eq!(t["status"], "SUCCESSFUL", "{t:#}");
    for h in f.zone_hosts(1) {
        let o = f.clients[h].observer_status().await.unwrap();
        assert!(!o.is_running() && !o.listening, "host {h}: {o:?}");
    }
    for h in f.zone_hosts(0) {
        assert!(f.clients[h].observer_status().await.unwrap().listening);
    }
    let zone: String =
        sqlx::query_scalar("select status from ob_zone where cluster_id = $1 and name = 'zone2'")
            .bind(c)
            .fetch_one(&f.app.db.pool)
            .await
            .unwrap();
    assert_eq!(zone, "STOPPED");
    // Starting a running zone is refused; starting the stopped one works.
    f.app
        .post(&format!("/api/v2/ob/clusters/{c}/zones/zone1/start"))
        .await
        .assert_error(400, "SERVER_STATE_INVALID");
    f.app
        .post(&format!("/api/v2/ob/clusters/{c}/zones/nope/start"))
        .await
        .assert_error(404, "ZONE_NOT_FOUND");
    let t = f
        .settled(
            f.post(&format!("/api/v2/ob/clusters/{c}/zones/zone2/start"))
                .await,
        )
        .await;
    assert_eq!(t["status"], "SUCCESSFUL", "{t:#}");
    for h in f.zone_hosts(1) {
        let o = f.clients[h].observer_status().await.unwrap();
        assert!(o.listening && o.active, "host {h}: {o:?}");
    }
    assert!(f.server_statuses().await.iter().all(|s| s == "RUNNING"));
    f.finish().await;
}
