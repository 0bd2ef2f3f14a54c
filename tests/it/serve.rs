//! `taskd serve` as a real process: it migrates its database, serves the API
//! on the address it logs, runs its worker loops and stops cleanly on
//! SIGTERM.

use crate::support::{wait_for, TestDb};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_migrates_serves_and_stops_on_sigterm() {
    let db = TestDb::new().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskd"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--workers", "2"])
        .env("DATABASE_URL", &db.url)
        .env("TASKD_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start taskd serve");
    let stdout = child.stderr.take().expect("stderr: the logs");
    // The log names the bound address; keep reading so the pipe never fills.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut workers = 0;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == "HTTP API listening" {
                let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_string());
            }
            if v["message"] == "worker started" {
                workers += 1;
            }
        }
        workers
    });
    let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
        .await
        .expect("join")
        .expect("taskd serve logs its address");
    let client = reqwest::Client::new();
    let ready = wait_for("readiness", Duration::from_secs(30), || async {
        let r = client
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(r)
    })
    .await;
    let body: serde_json::Value = ready.json().await.expect("JSON");
    assert_eq!(body["server"], addr.as_str());
    assert_eq!(body["data"]["status"], "UP");

    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid, which has not been reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll taskd serve") {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("taskd serve did not stop within 30 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "taskd serve exited with {status}");
    let workers = reader.join().expect("log reader");
    assert_eq!(workers, 2, "two worker loops ran");
}
