//! Chaos: three real `taskd worker` processes, one SIGKILLed every ~1.5 s and
//! started again, an API (no workers of its own) and real agents, running
//! restart tasks. Every task ends SUCCESSFUL; the agents' records show that
//! no attempt of a step ran twice at the same time and that no step started
//! before its upstream finished. `TASKD_SOAK_TASKS` sets the size (per
//! server; CI runs the small default).

use crate::actions::World;
use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};
use taskd::agent::CallRecord;
use tokio::process::{Child, Command};

fn spawn_worker(url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_taskd"))
        .arg("worker")
        .env("DATABASE_URL", url)
        .env("TASKD_WORKER_SLOTS", "8")
        .env("TASKD_DB_MAX_CONNECTIONS", "4")
        .env("TASKD_POLL_INTERVAL_MS", "100")
        .env("TASKD_HEARTBEAT_INTERVAL_MS", "200")
        .env("TASKD_DEAD_AFTER_MS", "1000")
        .env("TASKD_SWEEP_INTERVAL_MS", "200")
        .env("TASKD_RETRY_BACKOFF_MS", "20")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("a worker process")
}

#[tokio::test]
async fn killing_workers_loses_nothing_and_never_overlaps_a_step() {
    let per_server: usize = std::env::var("TASKD_SOAK_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    // The world's own in-process worker is stopped at once: only the
    // processes below run tasks.
    let w = World::new(&["RUNNING", "RUNNING", "RUNNING"], None).await;
    w.stop_in_process_worker().await;
    let url = w.app.db.url.clone();
    let mut workers: Vec<Child> = (0..3).map(|_| spawn_worker(&url)).collect();

    let started = Instant::now();
    let mut kills = 0;
    let mut next_kill = Instant::now() + Duration::from_millis(300);
    let mut done = vec![0usize; 3];
    let mut current: Vec<Option<i64>> = vec![None; 3];
    let mut all = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60 + 10 * per_server as u64);
    while done.iter().any(|&d| d < per_server) {
        assert!(Instant::now() < deadline, "tasks did not finish: {done:?}");
        for s in 0..3 {
            match current[s] {
                None if done[s] < per_server => {
                    let id = w.post(&w.op("restart", s)).await;
                    // Crash recovery is what is tested here, not the retry
                    // limit: give each step room for several kills.
                    // Lock order as the engine's: the task row first.
                    let mut tx = w.app.db.pool.begin().await.unwrap();
                    sqlx::query("select id from task_instance where id = $1 for update")
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    sqlx::query("update subtask_instance set retry_limit = 20 where task_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                    current[s] = Some(id);
                    all.push(id);
                }
                Some(id) => {
                    let t = w.task(id).await;
                    match t["status"].as_str() {
                        Some("SUCCESSFUL") => {
                            done[s] += 1;
                            current[s] = None;
                        }
                        Some("FAILED") => panic!("task {id} failed: {t:#}"),
                        _ => {}
                    }
                }
                None => {}
            }
        }
        if Instant::now() >= next_kill {
            let i = rand::random::<usize>() % workers.len();
            let _ = workers[i].start_kill();
            let _ = workers[i].wait().await;
            workers[i] = spawn_worker(&url);
            kills += 1;
            next_kill = Instant::now() + Duration::from_millis(1500);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{} restart tasks with {kills} worker kills in {:?}",
        all.len(),
        started.elapsed()
    );
    assert!(kills > 0, "the run lasted long enough to kill workers");
    let recovered: i64 =
        sqlx::query_scalar("select count(*) from subtask_instance where run_time > 1")
            .fetch_one(&w.app.db.pool)
            .await
            .unwrap();
    println!("{recovered} steps ran more than once after a kill");

    // No RUNNING leftovers, every subtask SUCCESSFUL.
    let open: i64 =
        sqlx::query_scalar("select count(*) from subtask_instance where status <> 'SUCCESSFUL'")
            .fetch_one(&w.app.db.pool)
            .await
            .unwrap();
    assert_eq!(open, 0);
    // In the database: every step started after its upstream finished.
    let late: i64 = sqlx::query_scalar(
        "select count(*) from subtask_edge e \
         join subtask_instance u on u.id = e.upstream_id \
         join subtask_instance d on d.id = e.downstream_id \
         where d.start_time < u.finish_time",
    )
    .fetch_one(&w.app.db.pool)
    .await
    .unwrap();
    assert_eq!(late, 0);

    // In the agents' records: attempts of one step never overlap, and a
    // step's calls come after every call of the steps before it.
    let series: HashMap<i64, (i64, i32)> =
        sqlx::query_as::<_, (i64, i64, i32)>("select id, task_id, series_id from subtask_instance")
            .fetch_all(&w.app.db.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, t, s)| (id, (t, s)))
            .collect();
    for c in &w.clients {
        let records: Vec<CallRecord> = c.records().await.unwrap();
        let mut by_step: HashMap<i64, Vec<&CallRecord>> = HashMap::new();
        for r in &records {
            let Some(sub) = r.key.split(':').next().and_then(|s| s.parse::<i64>().ok()) else {
                continue; // the test's own setup calls
            };
            if series.contains_key(&sub) {
                by_step.entry(sub).or_default().push(r);
            }
        }
        for (sub, rs) in &by_step {
            for a in rs {
                for b in rs {
                    if a.key != b.key {
                        let overlap = a.started_at < b.finished_at && b.started_at < a.finished_at;
                        assert!(
                            !overlap,
                            "two attempts of subtask {sub} overlapped: {a:?} {b:?}"
                        );
                    }
                }
            }
        }
        for (sub, rs) in &by_step {
            let (task, s) = series[sub];
            for (other, ors) in &by_step {
                let (t2, s2) = series[other];
                if t2 == task && s2 < s {
                    for a in rs {
                        for b in ors {
                            assert!(
                                a.started_at >= b.finished_at,
                                "step {s} of task {task} called the agent before step {s2} finished"
                            );
                        }
                    }
                }
            }
        }
    }
    for mut wk in workers {
        let _ = wk.start_kill();
        let _ = wk.wait().await;
    }
    // Killed workers, recoveries and retries kept each task's count of
    // active subtasks exact.
    crate::support::engine::assert_active_counts_exact(&w.app.db).await;
    w.finish().await;
}

#[tokio::test]
async fn an_agent_killed_mid_step_fails_the_task_by_the_rules_never_stuck() {
    let mut w = World::new(&["RUNNING"], None).await;
    // Replace host 0's in-process agent by a real `taskd agent` process.
    if let Some(a) = w.agents[0].take() {
        a.shutdown().await.unwrap();
    }
    let ip = crate::actions::own_ip();
    let port = 20000 + rand::random::<u16>() % 20000;
    let dir = std::env::temp_dir().join(format!("taskd-chaos-agent-{:08x}", rand::random::<u32>()));
    let spawn_agent = || {
        Command::new(env!("CARGO_BIN_EXE_taskd"))
            .args(["agent", "--listen", &format!("{ip}:{port}"), "--state-dir"])
            .arg(&dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("an agent process")
    };
    let mut agent = spawn_agent();
    let url = format!("http://{ip}:{port}");
    sqlx::query("update host set agent_url = $2 where id = $1")
        .bind(w.hosts[0])
        .bind(&url)
        .execute(&w.app.db.pool)
        .await
        .unwrap();
    let client = taskd::agent::AgentClient::new(reqwest::Client::new(), &url).unwrap();
    let never = tokio_util::sync::CancellationToken::new();
    let soon = || tokio::time::Instant::now() + Duration::from_secs(20);
    taskd::agent::wait_until("the agent", || client.status(), |_| true, soon(), &never)
        .await
        .unwrap();
    client
        .start_observer(
            "chaos:start",
            &taskd::agent::StartObserver { port: Some(2881) },
        )
        .await
        .unwrap();
    client
        .wait_observer("listening", |o| o.listening, soon(), &never)
        .await
        .unwrap();
    client.activate_observer("chaos:activate").await.unwrap();
    // The stop step stalls at the agent; kill the agent in the middle of it.
    client
        .set_fault(&taskd::agent::FaultSpec::stall(
            taskd::agent::Operation::ObserverStop,
            1,
            30_000,
        ))
        .await
        .unwrap();
    let id = w.post(&w.op("stop", 0)).await;
    crate::support::wait_for("the stop step to run", Duration::from_secs(20), || async {
        let t = w.task(id).await;
        let s = t["subtasks"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "Stop observer process")?
            .clone();
        (s["status"] == "RUNNING").then_some(())
    })
    .await;
    agent.start_kill().unwrap();
    agent.wait().await.unwrap();
    let t = w.settled(id).await;
    assert_eq!(t["status"], "FAILED", "the task ends, never stuck: {t:#}");
    let s = t["subtasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "Stop observer process")
        .unwrap();
    assert_eq!(
        (s["status"].as_str(), s["runTime"].as_i64()),
        (Some("FAILED"), Some(3))
    );

    // The agent comes back on its state dir, adopts its processes, and the
    // task retried succeeds.
    let mut agent = spawn_agent();
    taskd::agent::wait_until("the agent", || client.status(), |_| true, soon(), &never)
        .await
        .unwrap();
    w.app
        .post(&format!("/api/v2/tasks/instances/{id}/retry"))
        .await
        .ok();
    let t = w.settled(id).await;
    assert_eq!(t["status"], "SUCCESSFUL", "{t:#}");
    assert!(!client.observer_status().await.unwrap().is_running());
    assert_eq!(w.statuses(0).await.0, "STOPPED");
    let _ = agent.start_kill();
    let _ = agent.wait().await;
    let _ = taskd::agent::kill_recorded_processes(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    w.finish().await;
}
