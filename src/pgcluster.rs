//! A private PostgreSQL cluster started from the installed server binaries
//! (`pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin;
//! `TASKD_PG_BINDIR` overrides both): the demo's database when none runs,
//! and the fault tests' server that they stop and start themselves.
//!
//! [`Cluster::create`] runs initdb into a directory of its own (trust
//! authentication, fsync off, small buffers: it holds only throw-away data),
//! picks a free port on 127.0.0.1 and starts the server with pg_ctl. The
//! server is stopped (immediate) and the directory removed on drop. initdb
//! refuses to run as root, so as root every server command runs as the
//! `postgres` OS user (the server package creates it), which owns the
//! directory. Every call blocks: async callers run them on a blocking
//! thread.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// How to get the server binaries, for messages.
pub const INSTALL_HINT: &str = "install PostgreSQL's server (Debian, Ubuntu: `apt-get install \
     postgresql`; Fedora: `dnf install postgresql-server`; macOS: `brew install postgresql`) \
     or point TASKD_PG_BINDIR at its bin directory";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("PostgreSQL's server binaries (initdb, pg_ctl) are not in {looked}: {INSTALL_HINT}")]
    NoBinaries { looked: String },
    #[error("initdb refuses to run as root and there is no `postgres` OS user to run it as (the postgresql package creates it)")]
    NoPostgresUser,
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: PathBuf,
        source: std::io::Error,
    },
    #[error("{tool} failed: {output}")]
    Tool { tool: String, output: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How pg_ctl stops the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Sessions are terminated, a checkpoint is written.
    Fast,
    /// The server quits without cleanup, as after a crash; crash recovery
    /// runs at the next start.
    Immediate,
}

impl StopMode {
    fn arg(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// The OS user the server runs as.
#[derive(Clone, Copy, Debug)]
struct RunAs {
    uid: u32,
    gid: u32,
}

/// A private cluster, running from [`Cluster::create`] until stopped;
/// stopped and its directory removed when dropped.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    run_as: Option<RunAs>,
}

/// Where the server binaries are: `TASKD_PG_BINDIR`, `pg_config --bindir`,
/// else the newest /usr/lib/postgresql/*/bin holding initdb.
pub fn bindir() -> Result<PathBuf> {
    find_bindir(std::env::var_os("TASKD_PG_BINDIR"))
}

fn find_bindir(chosen: Option<std::ffi::OsString>) -> Result<PathBuf> {
    let has_tools = |d: &Path| d.join("initdb").exists() && d.join("pg_ctl").exists();
    if let Some(d) = chosen {
        let d = PathBuf::from(d);
        return if has_tools(&d) {
            Ok(d)
        } else {
            Err(Error::NoBinaries {
                looked: format!("TASKD_PG_BINDIR={}", d.display()),
            })
        };
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_tools(&d) {
            return Ok(d);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_tools(&bin).then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, d)| d)
        .ok_or_else(|| Error::NoBinaries {
            looked: "pg_config --bindir or /usr/lib/postgresql/*/bin".into(),
        })
}

/// Root cannot run initdb: as root, the `postgres` user.
fn run_as() -> Result<Option<RunAs>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let pw = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .ok_or(Error::NoPostgresUser)?;
    let (uid, gid) = (pw.uid.as_raw(), pw.gid.as_raw());
    Ok(Some(RunAs { uid, gid }))
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| Error::Io {
            what: "no free port on",
            path: "127.0.0.1".into(),
            source,
        })
}

fn output_text(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.trim().to_string()
}

impl Cluster {
    /// initdb into `dir` (created; it must not hold a cluster already) and
    /// start the server on a free port of 127.0.0.1. On failure the
    /// directory is removed and the error carries the tool's output.
    pub fn create(dir: PathBuf) -> Result<Cluster> {
        let bindir = bindir()?;
        let run_as = run_as()?;
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            what: "cannot create",
            path: dir.clone(),
            source,
        })?;
        // From here on, dropping `c` stops the server and removes `dir`.
        let mut c = Cluster {
            dir,
            bindir,
            port: 0,
            run_as,
        };
        if let Some(who) = c.run_as {
            std::os::unix::fs::chown(&c.dir, Some(who.uid), Some(who.gid)).map_err(|source| {
                Error::Io {
                    what: "cannot give the postgres user",
                    path: c.dir.clone(),
                    source,
                }
            })?;
        }
        let data = c.data_dir();
        let out = c.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        if !out.status.success() {
            return Err(Error::Tool {
                tool: "initdb".into(),
                output: output_text(&out),
            });
        }
        // A port that is free now may be taken before the server binds it:
        // try a few.
        for attempt in 0.. {
            c.port = free_port()?;
            let conf = format!(
                "\n# taskd private cluster\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 16MB\nmax_connections = 200\nlogging_collector = off\n",
                c.port,
                c.dir.display()
            );
            let auto = data.join("postgresql.auto.conf");
            std::fs::write(&auto, conf).map_err(|source| Error::Io {
                what: "cannot write",
                path: auto,
                source,
            })?;
            match c.start() {
                Ok(()) => return Ok(c),
                Err(e) if attempt == 3 => return Err(e),
                Err(_) => {}
            }
        }
        unreachable!("the loop returns")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The URL of database `db` on this cluster (user postgres, trusted).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Result<Output> {
        let exe = self.bindir.join(tool);
        let mut cmd = Command::new(&exe);
        cmd.args(args).current_dir(&self.dir);
        if let Some(who) = self.run_as {
            cmd.uid(who.uid).gid(who.gid);
            cmd.env("HOME", &self.dir);
        }
        cmd.output()
            .map_err(|source| Error::Spawn { tool: exe, source })
    }

    fn pg_ctl(&self, action: &str, args: &[&str]) -> Result<()> {
        let data = self.data_dir();
        let log = self.log_file();
        let mut all: Vec<&std::ffi::OsStr> = vec![
            "-D".as_ref(),
            data.as_os_str(),
            "-l".as_ref(),
            log.as_os_str(),
        ];
        all.extend(args.iter().map(std::ffi::OsStr::new));
        all.push(action.as_ref());
        let out = self.run("pg_ctl", &all)?;
        if out.status.success() {
            return Ok(());
        }
        let log = self.log();
        let last = log.lines().rev().find(|l| !l.trim().is_empty());
        Err(Error::Tool {
            tool: format!("pg_ctl {action}"),
            output: match last {
                Some(l) => format!("{} (server log: {})", output_text(&out), l.trim()),
                None => output_text(&out),
            },
        })
    }

    /// Starts the (stopped) server on its port; returns once it accepts
    /// connections, crash recovery included.
    pub fn start(&self) -> Result<()> {
        self.pg_ctl("start", &["-w", "-t", "60"])
    }

    /// Stops the server; returns once it is down.
    pub fn stop(&self, mode: StopMode) -> Result<()> {
        self.pg_ctl("stop", &["-w", "-t", "60", "-m", mode.arg()])
    }

    /// Whether the server is running (pg_ctl status).
    pub fn is_running(&self) -> bool {
        self.pg_ctl("status", &[]).is_ok()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let _ = self.pg_ctl("stop", &["-w", "-t", "30", "-m", "immediate"]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bindir_without_the_tools_says_how_to_get_them() {
        let e = find_bindir(Some("/nonexistent/bin".into())).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("TASKD_PG_BINDIR=/nonexistent/bin"), "{text}");
        assert!(text.contains("apt-get install postgresql"), "{text}");
    }
}
