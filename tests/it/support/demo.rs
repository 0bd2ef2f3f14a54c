//! `taskd demo` as a real process for the tests that need one running: its
//! own TMPDIR (so what it leaves behind can be checked), its own loopback
//! addresses, its printed URL and credentials read from its output. Stopped
//! with SIGTERM (and waited for) when dropped, so a failed test leaves no
//! agents or observers running.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

/// How long a demo may take to come up (a private cluster's initdb on a
/// loaded machine included).
const COME_UP: Duration = Duration::from_secs(180);

/// A running demo.
pub struct Demo {
    child: Option<Child>,
    /// Its URL, e.g. http://127.0.0.1:8080.
    pub base: String,
    pub user: String,
    pub password: String,
    /// What it printed on stdout up to "Ctrl-C stops the demo".
    pub stdout: Vec<String>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The TMPDIR it was given.
    pub tmp: PathBuf,
}

/// A demo that exited before it was up.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    /// What it left in its TMPDIR.
    pub left: Vec<PathBuf>,
}

/// A fresh directory for a demo's TMPDIR.
fn fresh_tmp() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "taskd-demo-tmp-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("a TMPDIR for the demo");
    dir
}

/// A first host address of its own (127.a.b.2 up), so concurrent demos and
/// tests never meet.
pub fn random_host_ip() -> String {
    format!(
        "127.{}.{}.2",
        rand::random::<u8>(),
        1 + rand::random::<u8>() % 250
    )
}

/// What is left in a directory.
pub fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

impl Demo {
    /// Starts `taskd demo` with `env` on top of: its own TMPDIR and host
    /// addresses, `RUST_LOG=warn`, no DATABASE_URL (unless `env` sets it).
    /// Returns once it printed its instructions, or how it exited.
    pub async fn start(env: &[(&str, &str)]) -> Result<Demo, Exited> {
        let tmp = fresh_tmp();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskd"));
        cmd.arg("demo")
            .env_remove("DATABASE_URL")
            .env_remove("TASKD_LISTEN")
            .env("TMPDIR", &tmp)
            .env("TASKD_DEMO_HOST_IP", random_host_ip())
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("taskd demo starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut err_lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let sink = stderr.clone();
        let err_task = tokio::spawn(async move {
            while let Ok(Some(l)) = err_lines.next_line().await {
                eprintln!("demo: {l}");
                sink.lock().expect("not poisoned").push(l);
            }
        });
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut stdout = Vec::new();
        let mut up = false;
        let read = tokio::time::timeout(COME_UP, async {
            while let Ok(Some(line)) = lines.next_line().await {
                println!("demo: {line}");
                let done = line.starts_with("Ctrl-C");
                stdout.push(line);
                if done {
                    up = true;
                    break;
                }
            }
        })
        .await;
        let mut demo = Demo {
            child: Some(child),
            base: String::new(),
            user: String::new(),
            password: String::new(),
            stdout,
            stderr,
            tmp,
        };
        if read.is_err() {
            panic!(
                "the demo did not come up within {COME_UP:?}: {:#?}",
                demo.stdout
            );
        }
        if !up {
            let status = demo.wait(Duration::from_secs(60)).await;
            // The stderr reader may still be draining the pipe.
            let _ = tokio::time::timeout(Duration::from_secs(10), err_task).await;
            return Err(Exited {
                status,
                stdout: std::mem::take(&mut demo.stdout),
                stderr: demo.stderr_lines(),
                left: entries(&demo.tmp),
            });
        }
        // Drain stdout in the background, so the demo never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        for line in &demo.stdout {
            if let Some(u) = line.strip_prefix("taskd demo is running at ") {
                demo.base = u.trim().to_string();
            }
            if let Some(rest) = line.trim().strip_prefix("user: ") {
                if let Some((user, password)) = rest.split_once(", password: ") {
                    demo.user = user.to_string();
                    demo.password = password.to_string();
                }
            }
        }
        assert!(!demo.base.is_empty(), "a URL in {:#?}", demo.stdout);
        assert!(
            !demo.password.is_empty(),
            "credentials in {:#?}",
            demo.stdout
        );
        Ok(demo)
    }

    /// What it printed on stderr so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().expect("not poisoned").clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `signal`, then waits (at most a minute) for the demo to exit.
    pub async fn signal(&mut self, signal: libc::c_int) -> ExitStatus {
        if let Some(pid) = self.child.as_ref().and_then(|c| c.id()) {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe {
                libc::kill(pid as i32, signal);
            }
        }
        self.wait(Duration::from_secs(60)).await
    }

    async fn wait(&mut self, deadline: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("not waited for yet");
        let status = tokio::time::timeout(deadline, child.wait())
            .await
            .unwrap_or_else(|_| panic!("the demo did not exit within {deadline:?}"))
            .expect("wait for the demo");
        self.child = None;
        status
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                // SAFETY: kill(2) on our own child, not yet reaped.
                unsafe {
                    libc::kill(pid as i32, libc::SIGTERM);
                }
                // Drop cannot await: poll, so its agents stop their
                // observers before the test goes on.
                for _ in 0..600 {
                    if !matches!(child.try_wait(), Ok(None)) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}
