//! `taskd tasks` and `taskd ops` end to end: the real binary as a client of
//! a served API with a worker and real agents; the progress display read
//! through a pseudo-terminal (`script`).

use crate::actions::World;
use serde_json::Value;
use std::process::Output;
use taskd::agent::{FaultSpec, Operation};

/// Runs `taskd ARGS` against the world's API as its admin.
async fn taskd(w: &World, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskd"));
    cmd.args(args)
        .env("TASKD_URL", &w.app.base)
        .env("TASKD_USER", &w.app.admin.name)
        .env("TASKD_PASSWORD", &w.app.admin.password)
        .env_remove("TASKD_OUTPUT")
        .env_remove("RUST_LOG");
    cmd.output().await.expect("taskd runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o)
}

fn json(o: Output) -> Value {
    serde_json::from_str(&ok(o)).expect("--output json prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_wait_follows_a_task_and_tasks_lists_shows_and_logs_it() {
    let w = World::new(&["RUNNING"], None).await;
    let (cluster, server) = (w.cluster.to_string(), w.servers[0].to_string());
    let out = ok(taskd(
        &w,
        &[
            "ops",
            "restart",
            "--cluster",
            &cluster,
            "--server",
            &server,
            "--wait",
        ],
    )
    .await);
    // Not a terminal: one line per change, then the verdict.
    let last = out.lines().last().unwrap_or_default().to_string();
    assert!(last.contains("SUCCESSFUL in"), "{out}");
    assert!(
        out.contains(": RUNNING"),
        "each step is seen running: {out}"
    );
    let id: i64 = last
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("the task id in the last line");

    // The list, as JSON and as a table.
    let page = json(taskd(&w, &["tasks", "list", "--output", "json"]).await);
    assert_eq!(page["contents"][0]["id"], id, "{page:#}");
    assert_eq!(page["contents"][0]["status"], "SUCCESSFUL");
    let table = ok(taskd(&w, &["tasks", "list", "--status", "SUCCESSFUL"]).await);
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("ID") && header.contains("STATUS"),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with(&format!("{id} "))),
        "{table}"
    );

    // The task and one subtask's log.
    let task = json(taskd(&w, &["tasks", "show", &id.to_string(), "--output", "json"]).await);
    let first = task["subtasks"][0]["id"].as_i64().expect("a subtask");
    let shown = ok(taskd(&w, &["tasks", "show", &id.to_string()]).await);
    assert!(shown.starts_with(&format!("task {id} ")), "{shown}");
    assert_eq!(
        shown.lines().count(),
        2 + task["subtasks"].as_array().map_or(0, Vec::len),
        "a header line, a table header and a row per subtask: {shown}"
    );
    let log = ok(taskd(&w, &["tasks", "log", &id.to_string(), &first.to_string()]).await);
    assert!(!log.trim().is_empty(), "the run's log");

    // An API refusal is one line with the API's code, exit 1.
    let o = taskd(&w, &["tasks", "rollback", &id.to_string()]).await;
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("taskd: POST /api/v2/tasks/instances/"),
        "{err}"
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_exits_1_and_retry_wait_finishes_it() {
    let w = World::new(&["RUNNING"], None).await;
    w.clients[0]
        .set_fault(&FaultSpec::fail(Operation::ObserverStart, 3))
        .await
        .expect("fault");
    let (cluster, server) = (w.cluster.to_string(), w.servers[0].to_string());
    let o = taskd(
        &w,
        &[
            "ops",
            "restart",
            "--cluster",
            &cluster,
            "--server",
            &server,
            "--wait",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("ended FAILED"), "{err}");
    let id: i64 = err
        .split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("taskd: task N ended FAILED: {err}"));
    let out = ok(taskd(&w, &["tasks", "retry", &id.to_string(), "--wait"]).await);
    assert!(
        out.trim_end().ends_with(')') && out.contains("SUCCESSFUL in"),
        "{out}"
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_the_progress_is_redrawn_with_a_bar() {
    let w = World::new(&["RUNNING"], None).await;
    let command = format!(
        "{} ops restart --cluster {} --server {} --wait",
        env!("CARGO_BIN_EXE_taskd"),
        w.cluster,
        w.servers[0]
    );
    // `script` gives the command a pseudo-terminal and copies what it
    // draws to its own standard output.
    let o = tokio::process::Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .env("TASKD_URL", &w.app.base)
        .env("TASKD_USER", &w.app.admin.name)
        .env("TASKD_PASSWORD", &w.app.admin.password)
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("script runs");
    let screen = ok(o);
    assert!(screen.contains("\u{1b}["), "redrawn in place: {screen:?}");
    let done = format!("[{}]", "#".repeat(30));
    assert!(
        screen.contains(&done) && screen.contains("SUCCESSFUL"),
        "a full bar at the end: {screen}"
    );
    w.finish().await;
}
