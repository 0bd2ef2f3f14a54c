//! `taskd serve` as a child process on a free loopback port, with one
//! worker, a fast engine and an admin: for tests that need a process of
//! its own (its environment, its process-wide metrics, its exit).

use super::{wait_for, TestDb};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const ADMIN: (&str, &str) = ("admin", "served-test-password");

/// A running `taskd serve` and the address it logged.
pub struct Served {
    child: Child,
    pub addr: String,
}

impl Served {
    /// Starts `taskd serve` on `db` with `env` added to its environment
    /// (and no `OTEL_*` variable of this process), once it has logged the
    /// address it listens on.
    pub async fn start(db: &TestDb, env: &[(&str, &str)]) -> Served {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskd"));
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--workers", "1"])
            .env("DATABASE_URL", &db.url)
            .env("TASKD_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env("TASKD_ADMIN_USER", ADMIN.0)
            .env("TASKD_ADMIN_PASSWORD", ADMIN.1)
            .env("TASKD_POLL_INTERVAL_MS", "50")
            .env("TASKD_RETRY_BACKOFF_MS", "10")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OTEL_")) {
            cmd.env_remove(k);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().expect("start taskd serve");
        let logs = child.stderr.take().expect("stderr: the logs");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        // Keep reading so the pipe never fills.
        std::thread::spawn(move || {
            for line in BufReader::new(logs).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v["message"] == "HTTP API listening" {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_string());
                }
            }
        });
        let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
            .await
            .expect("join")
            .expect("taskd serve logs its address");
        Served { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGTERM, then a clean exit within 30 s.
    pub async fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let child = &mut self.child;
        let status = wait_for("taskd serve to exit", Duration::from_secs(30), || {
            let s = child.try_wait().ok().flatten();
            async move { s }
        })
        .await;
        assert!(status.success(), "taskd serve exited with {status}");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
