//! `taskd demo` as a newcomer runs it: the real binary, its own agents and
//! inventory; a restart over the API it prints runs to SUCCESSFUL; Ctrl-C
//! stops everything it started.

use crate::support::{wait_for, TestDb};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn demo_runs_an_operation_and_stops_cleanly() {
    let db = TestDb::new().await;
    let port: u16 = 40000 + rand::random::<u16>() % 20000;
    let state = std::env::temp_dir().join(format!("taskd-demo-it-{:08x}", rand::random::<u32>()));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskd"))
        .arg("demo")
        .env("DATABASE_URL", &db.url)
        .env("TASKD_LISTEN", "127.0.0.1:0")
        .env("TASKD_DEMO_AGENT_PORT", port.to_string())
        // Addresses of their own, so concurrent runs (or a demo) never meet.
        .env(
            "TASKD_DEMO_HOST_IP",
            format!("127.{}.{}.2", rand::random::<u8>(), rand::random::<u8>()),
        )
        .env("TASKD_DEMO_OBSERVER_PORT", (port - 1000).to_string())
        .env("TASKD_DEMO_STATE_DIR", &state)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut restart = None;
    let mut base = None;
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the demo prints its URL within a minute")
    {
        if let Some(u) = line.strip_prefix("taskd demo is running at ") {
            base = Some(u.trim().to_string());
        }
        if line.contains("curl -s -u") && line.contains("/restart") && restart.is_none() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let user = words
                .iter()
                .position(|w| *w == "-u")
                .map(|i| words[i + 1].to_string());
            restart = Some((
                user.expect("credentials in the curl line"),
                words.last().unwrap().to_string(),
            ));
        }
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    let base = base.expect("a URL");
    let (user, restart) = restart.expect("a curl line");
    assert!(restart.starts_with(&base));
    let (name, password) = user.split_once(':').unwrap();
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(&restart)
        .basic_auth(name, Some(password))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["successful"], true, "{created:#}");
    let id = created["data"]["id"].as_i64().unwrap();
    let url = format!("{base}/api/v2/tasks/instances/{id}");
    wait_for(
        "the demo restart to succeed",
        Duration::from_secs(60),
        || async {
            let t: serde_json::Value = http
                .get(&url)
                .basic_auth(name, Some(password))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            match t["data"]["status"].as_str() {
                Some("SUCCESSFUL") => Some(()),
                Some("FAILED") => panic!("demo task failed: {t:#}"),
                _ => None,
            }
        },
    )
    .await;
    let pid = child.id().unwrap() as i32;
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the demo stops on Ctrl-C")
        .unwrap();
    assert!(status.success(), "{status:?}");
    // Every process the demo's agents ran is gone.
    for i in 1..=3 {
        let dir = state.join(format!("agent-{i}"));
        assert_eq!(
            taskd::agent::kill_recorded_processes(&dir).unwrap_or(0),
            0,
            "{}",
            dir.display()
        );
    }
    let _ = std::fs::remove_dir_all(&state);
}
