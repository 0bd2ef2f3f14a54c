//! The four operations end to end with their real actions: the API, a worker
//! with the standard registry, and real agents on loopback running real
//! processes (the world is `support::world`).

use crate::support::wait_for;
use crate::support::world::DEADLINE;
pub use crate::support::world::{
    own_ip, register_host, run_observer, test_agent_config, World, SQL_PORT,
};
use serde_json::Value;
use std::time::Duration;
use taskd::agent::protocol::{AGENT_PROCESSES, POS_PROXY};
use taskd::agent::{process, FaultSpec, Operation};

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
