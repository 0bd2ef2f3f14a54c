//! The OS processes the reference agent runs: spawning a child in a process
//! group of its own, reaping it when it exits, re-adopting it by pid after an
//! agent restart, and stopping it (SIGTERM, a grace period, then SIGKILL).

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{getpgid, Pid};
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start {name} ({program}): {source}")]
    Spawn {
        name: String,
        program: String,
        source: std::io::Error,
    },
    #[error("cannot open the log file {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot signal {name} (pid {pid}): {source}")]
    Signal {
        name: String,
        pid: u32,
        source: std::io::Error,
    },
    #[error("{name} (pid {pid}) is still alive {waited:?} after SIGKILL")]
    Unkillable {
        name: String,
        pid: u32,
        waited: Duration,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long a process may take to disappear after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Name in statuses and logs.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    /// File the process's stdout and stderr are appended to.
    pub log: PathBuf,
}

/// A process the agent runs: one it spawned (and reaps), or one it adopted
/// by pid from its state file after a restart.
#[derive(Debug, Clone)]
pub struct Proc {
    pub name: String,
    pub pid: u32,
    /// Start time in clock ticks since boot (Linux `/proc`), so a reused pid
    /// is not mistaken for this process.
    pub start_ticks: Option<u64>,
    /// Set for a child of this agent: `Some(how it ended)` once reaped.
    exit: Option<watch::Receiver<Option<String>>>,
}

/// How a stop went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// Whether the process was running when the stop began.
    pub was_running: bool,
    /// Whether SIGKILL was sent (force, or the grace period ran out).
    pub killed: bool,
    /// How it ended, when the agent reaped it.
    pub exit: Option<String>,
}

impl Proc {
    /// Spawns `spec` as the leader of a new process group, output appended
    /// to its log file, and reaps it in the background when it exits. Must
    /// be called inside a tokio runtime.
    pub fn spawn(spec: &Spec) -> Result<Proc> {
        let log_err = |source| Error::Log {
            path: spec.log.clone(),
            source,
        };
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(log_err)?;
        let err = out.try_clone().map_err(log_err)?;
        let mut cmd = tokio::process::Command::new(&spec.program);
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(false);
        // Its own group: a Ctrl-C at the agent's terminal does not reach it,
        // and a stop signals the whole group (a shell and what it started).
        cmd.process_group(0);
        let spawn_err = |source| Error::Spawn {
            name: spec.name.clone(),
            program: spec.program.display().to_string(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let Some(pid) = child.id() else {
            return Err(spawn_err(std::io::Error::other(
                "the process exited before its pid was known",
            )));
        };
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let how = match child.wait().await {
                Ok(status) => describe_exit(status),
                Err(e) => format!("could not be waited for: {e}"),
            };
            tx.send_replace(Some(how));
        });
        tracing::info!(name = %spec.name, pid, "process started");
        Ok(Proc {
            name: spec.name.clone(),
            pid,
            start_ticks: start_ticks(pid),
            exit: Some(rx),
        })
    }

    /// Adopts a process recorded by an earlier agent, if it still runs.
    pub fn adopt(name: &str, pid: u32, start_ticks: Option<u64>) -> Option<Proc> {
        is_alive(pid, start_ticks).then(|| Proc {
            name: name.to_string(),
            pid,
            start_ticks,
            exit: None,
        })
    }

    /// Whether the process runs now.
    pub fn is_running(&self) -> bool {
        match &self.exit {
            Some(rx) => rx.borrow().is_none(),
            None => is_alive(self.pid, self.start_ticks),
        }
    }

    /// How the process ended, when this agent reaped it.
    pub fn exit_reason(&self) -> Option<String> {
        self.exit.as_ref().and_then(|rx| rx.borrow().clone())
    }

    /// Stops the process: SIGTERM to its group, up to `grace` to exit, then
    /// SIGKILL; with `force`, SIGKILL at once. Returns once the pid is gone.
    pub async fn stop(&self, force: bool, grace: Duration) -> Result<Stopped> {
        if !self.is_running() {
            return Ok(Stopped {
                was_running: false,
                killed: false,
                exit: self.exit_reason(),
            });
        }
        let mut killed = force;
        if force {
            self.signal(Signal::SIGKILL)?;
        } else {
            self.signal(Signal::SIGTERM)?;
            if !self.wait_gone(grace).await {
                tracing::warn!(name = %self.name, pid = self.pid, ?grace,
                    "process ignored SIGTERM; sending SIGKILL");
                self.signal(Signal::SIGKILL)?;
                killed = true;
            }
        }
        if !self.wait_gone(KILL_WAIT).await {
            return Err(Error::Unkillable {
                name: self.name.clone(),
                pid: self.pid,
                waited: KILL_WAIT,
            });
        }
        tracing::info!(name = %self.name, pid = self.pid, killed, "process stopped");
        Ok(Stopped {
            was_running: true,
            killed,
            exit: self.exit_reason(),
        })
    }

    /// Sends `sig` to the process's group, or to the process alone when it
    /// does not lead its group.
    fn signal(&self, sig: Signal) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        match signal_group_or_process(self.pid, sig) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(Error::Signal {
                name: self.name.clone(),
                pid: self.pid,
                source: e.into(),
            }),
        }
    }

    /// Waits up to `limit` for the process to be gone; true if it is.
    async fn wait_gone(&self, limit: Duration) -> bool {
        match &self.exit {
            Some(rx) => {
                let mut rx = rx.clone();
                let gone = tokio::time::timeout(limit, rx.wait_for(|v| v.is_some())).await;
                gone.is_ok()
            }
            None => {
                let end = Instant::now() + limit;
                let mut pause = Duration::from_millis(5);
                loop {
                    if !is_alive(self.pid, self.start_ticks) {
                        return true;
                    }
                    let now = Instant::now();
                    if now >= end {
                        return false;
                    }
                    tokio::time::sleep(pause.min(end - now)).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
            }
        }
    }
}

/// A pid that may be signalled: greater than 1 and a valid `pid_t`, so
/// that neither "every process" (-1) nor "my group" (0) is ever addressed.
fn valid_pid(pid: u32) -> Option<Pid> {
    i32::try_from(pid)
        .ok()
        .filter(|p| *p > 1)
        .map(Pid::from_raw)
}

/// Sends `sig` to the group `pid` leads, or to `pid` alone when it leads
/// none; nothing for a pid that [`valid_pid`] refuses.
pub(crate) fn signal_group_or_process(pid: u32, sig: Signal) -> nix::Result<()> {
    let Some(p) = valid_pid(pid) else {
        return Ok(());
    };
    if getpgid(Some(p)) == Ok(p) {
        killpg(p, sig)
    } else {
        kill(p, sig)
    }
}

/// Whether `pid` is a live process of this user (not a zombie) and, when
/// `start_ticks` is given and `/proc` is there, the same process as then.
pub fn is_alive(pid: u32, start_ticks: Option<u64>) -> bool {
    let Some(p) = valid_pid(pid) else {
        return false;
    };
    // No signal: only whether the process exists and may be signalled.
    if kill(p, None).is_err() {
        // ESRCH: gone. EPERM: another user's process, so not ours.
        return false;
    }
    if !Path::new("/proc/self/stat").exists() {
        return true;
    }
    match proc_stat(pid) {
        Some((state, ticks)) => {
            !matches!(state, 'Z' | 'X') && start_ticks.is_none_or(|t| t == ticks)
        }
        None => false,
    }
}

/// The start time of `pid` in clock ticks since boot, from `/proc`.
pub fn start_ticks(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|(_, ticks)| ticks)
}

/// State letter and start time of a process, from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses `pid (comm) S ppid … starttime …`: the command may hold spaces
/// and parentheses, so fields are counted after the last `)`. The state is
/// field 3 and the start time field 22.
fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ticks = fields.nth(18)?.parse().ok()?;
    Some((state, ticks))
}

/// "exited with code 0", "killed by signal 9 (SIGKILL)".
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(sig) => match Signal::try_from(sig) {
            Ok(known) => format!("killed by signal {sig} ({})", known.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        },
        None => format!("ended: {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_names() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 \
                    1 0 987654 1000000 100 18446744073709551615";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) Z"), None);
    }

    #[test]
    fn dangerous_pids_are_never_alive() {
        assert!(!is_alive(0, None));
        assert!(!is_alive(1, None));
        assert!(!is_alive(u32::MAX, None));
        assert!(is_alive(std::process::id(), None));
        let ticks = start_ticks(std::process::id());
        assert!(is_alive(std::process::id(), ticks));
        if let Some(t) = ticks {
            assert!(!is_alive(std::process::id(), Some(t + 1)));
        }
    }

    #[tokio::test]
    async fn spawned_children_are_stopped_and_reaped() {
        let log = std::env::temp_dir().join(format!(
            "taskd-proc-test-{}-{:08x}.log",
            std::process::id(),
            rand::random::<u32>()
        ));
        let spec = Spec {
            name: "sleeper".into(),
            program: "sleep".into(),
            args: vec!["30".into()],
            env: vec![],
            log: log.clone(),
        };
        let p = Proc::spawn(&spec).expect("spawn sleep");
        assert!(p.is_running());
        assert!(is_alive(p.pid, p.start_ticks));
        let stopped = p
            .stop(false, Duration::from_secs(5))
            .await
            .expect("stop sleep");
        assert!(stopped.was_running);
        assert!(!stopped.killed);
        assert_eq!(
            stopped.exit.as_deref(),
            Some("killed by signal 15 (SIGTERM)")
        );
        assert!(!is_alive(p.pid, p.start_ticks));
        let again = p.stop(true, Duration::ZERO).await.expect("second stop");
        assert!(!again.was_running);
        let _ = std::fs::remove_file(log);
    }
}
