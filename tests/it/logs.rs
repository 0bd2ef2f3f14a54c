//! Logs: `--log-format json` writes one JSON object per line, and every
//! line of a subtask run carries the trace id, task id, subtask id and
//! run_time.

use crate::support::engine::{new_task, submit_with};
use crate::support::{wait_for, TestDb};
use std::process::Stdio;
use std::time::Duration;
use taskd::dag::NodeSpec;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn json_logs_carry_the_run_identity_on_every_subtask_line() {
    let db = TestDb::new().await;
    let mut task = new_task("logged");
    task.trace_id = "feedc0de12345678".into();
    let id = submit_with(&db, task, vec![NodeSpec::new("s", "test.sleep?ms=10", 10)]).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskd"))
        .args(["worker", "--log-format", "json"])
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stderr.take().unwrap();
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        let mut all = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            all.push(l);
        }
        all
    });
    wait_for("the task to succeed", Duration::from_secs(30), || async {
        let t = taskd::store::task::get(&db.pool, id).await.ok()??;
        (t.status == taskd::model::TaskStatus::Successful).then_some(())
    })
    .await;
    unsafe {
        libc::kill(child.id().unwrap() as i32, libc::SIGTERM);
    }
    child.wait().await.unwrap();
    let lines = reader.await.unwrap();
    let json: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let run_lines: Vec<&serde_json::Value> = json
        .iter()
        .filter(|v| v["span"]["name"] == "subtask")
        .collect();
    assert!(
        run_lines.len() >= 3,
        "start, the action's line, the end: {lines:#?}"
    );
    for v in &run_lines {
        let span = &v["span"];
        assert_eq!(span["trace_id"], "feedc0de12345678", "{v}");
        assert_eq!(span["task_id"], id.0, "{v}");
        assert!(span["subtask_id"].is_i64() && span["run_time"] == 1, "{v}");
    }
    assert!(
        run_lines.iter().any(|v| v["log"] == "sleeping 10 ms"),
        "{lines:#?}"
    );
}
