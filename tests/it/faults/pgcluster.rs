//! A private PostgreSQL cluster a test starts, stops and restarts itself,
//! from the installed server binaries (`pg_config --bindir`, else the
//! newest /usr/lib/postgresql/*/bin; `TASKD_PG_BINDIR` overrides both).
//!
//! `PgCluster::start()` runs initdb into a fresh temporary directory (trust
//! authentication, fsync off, small buffers: it holds only test data), picks
//! a free port on 127.0.0.1 and starts the server with pg_ctl. `url(db)`,
//! `database()` (a fresh database with taskd's migrations), `stop(mode)`,
//! `start_again()`, `restart(mode)` and `stop_for(d, mode)` drive it; the
//! server is stopped (immediate) and the directory removed on drop. initdb
//! refuses to run as root, so as root every server command runs as the
//! `postgres` OS user (the server package creates it), which owns the
//! directory.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

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
#[derive(Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

/// Where the cluster lives and how its tools are run; cheap to clone into
/// a blocking thread.
#[derive(Clone)]
struct Server {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    run_as: Option<RunAs>,
}

/// A running private cluster; stopped and removed when dropped.
pub struct PgCluster {
    s: Server,
}

fn bindir() -> PathBuf {
    if let Ok(d) = std::env::var("TASKD_PG_BINDIR") {
        return PathBuf::from(d);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && d.join("initdb").exists() {
            return d;
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, d)| d)
        .expect("PostgreSQL's server binaries (initdb, pg_ctl): install the postgresql package or set TASKD_PG_BINDIR")
}

/// Root cannot run initdb: as root, the `postgres` user.
fn run_as() -> Option<RunAs> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: a valid C string; the returned record is read at once, before
    // any other getpw* call on this thread.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "tests run as root and need the `postgres` OS user to run initdb (the postgresql package creates it)"
    );
    // SAFETY: checked non-null above.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Some(RunAs { uid, gid })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn chown(path: &Path, who: RunAs) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL in a path");
    // SAFETY: a valid C string.
    let rc = unsafe { libc::chown(c.as_ptr(), who.uid, who.gid) };
    assert_eq!(
        rc,
        0,
        "chown {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

impl PgCluster {
    /// initdb and start a new cluster; panics with the server's log if it
    /// cannot.
    pub async fn start() -> PgCluster {
        let s = tokio::task::spawn_blocking(Server::create)
            .await
            .expect("the cluster's setup thread");
        PgCluster { s }
    }
}

impl Server {
    fn create() -> Server {
        let dir = std::env::temp_dir().join(format!(
            "taskd-pg-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("the cluster's directory");
        let mut c = Server {
            dir,
            bindir: bindir(),
            port: 0,
            run_as: run_as(),
        };
        if let Some(who) = c.run_as {
            chown(&c.dir, who);
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
        );
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // A port that is free now may be taken before the server binds it:
        // try a few.
        for attempt in 0.. {
            c.port = free_port();
            let conf = format!(
                "\n# taskd test cluster\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 16MB\nmax_connections = 200\nlogging_collector = off\n",
                c.port,
                c.dir.display()
            );
            std::fs::write(data.join("postgresql.auto.conf"), conf)
                .expect("the cluster's settings");
            if c.try_start() {
                return c;
            }
            if attempt == 3 {
                panic!("the private cluster did not start:\n{}", c.log());
            }
        }
        unreachable!()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Output {
        let mut cmd = Command::new(self.bindir.join(tool));
        cmd.args(args).current_dir(&self.dir);
        if let Some(who) = self.run_as {
            cmd.uid(who.uid).gid(who.gid);
            cmd.env("HOME", &self.dir);
        }
        cmd.output().unwrap_or_else(|e| panic!("run {tool}: {e}"))
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let data = self.data_dir();
        let log = self.log_file();
        let mut all: Vec<&std::ffi::OsStr> = vec![
            "-D".as_ref(),
            data.as_os_str(),
            "-l".as_ref(),
            log.as_os_str(),
        ];
        all.extend(args.iter().map(std::ffi::OsStr::new));
        self.run("pg_ctl", &all)
    }

    fn try_start(&self) -> bool {
        self.pg_ctl(&["-w", "-t", "60", "start"]).status.success()
    }
}

impl PgCluster {
    /// The server's log so far.
    pub fn log(&self) -> String {
        self.s.log()
    }

    pub fn port(&self) -> u16 {
        self.s.port
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.s.port))
    }

    /// The URL of database `db` on this cluster.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.s.port)
    }

    /// A fresh database with taskd's migrations applied; returns its URL.
    pub async fn database(&self) -> String {
        let name = format!("taskd_{:08x}", rand::random::<u32>());
        let admin = sqlx::PgPool::connect(&self.url("postgres"))
            .await
            .expect("the private cluster's postgres database");
        sqlx::query(&format!("create database {name}"))
            .execute(&admin)
            .await
            .expect("create a database on the private cluster");
        admin.close().await;
        let url = self.url(&name);
        taskd::db::migrate(&url)
            .await
            .expect("migrate the database");
        url
    }

    /// Stops the server (pg_ctl waits until it is down).
    pub async fn stop(&self, mode: StopMode) {
        let out = self
            .blocking(move |c| c.pg_ctl(&["-w", "-t", "60", "-m", mode.arg(), "stop"]))
            .await;
        assert!(
            out.status.success(),
            "pg_ctl stop: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Starts the stopped server again on the same port (pg_ctl waits until
    /// it accepts connections, crash recovery included).
    pub async fn start_again(&self) {
        let ok = self.blocking(|c| c.try_start()).await;
        assert!(ok, "pg_ctl start:\n{}", self.log());
    }

    /// Stop then start.
    pub async fn restart(&self, mode: StopMode) {
        self.stop(mode).await;
        self.start_again().await;
    }

    /// Stop, stay down for `down`, start again: an outage of that length.
    pub async fn stop_for(&self, down: Duration, mode: StopMode) {
        self.stop(mode).await;
        tokio::time::sleep(down).await;
        self.start_again().await;
    }

    /// Whether the server is running (pg_ctl status).
    pub async fn is_running(&self) -> bool {
        self.blocking(|c| c.pg_ctl(&["status"]).status.success())
            .await
    }

    /// Runs a server command on a blocking thread, so the test's runtime
    /// (a proxy, a worker) keeps running meanwhile.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Server) -> T + Send + 'static,
    ) -> T {
        let s = self.s.clone();
        tokio::task::spawn_blocking(move || f(&s))
            .await
            .expect("a pg_ctl thread")
    }

    pub fn dir(&self) -> &Path {
        &self.s.dir
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .s
            .pg_ctl(&["-w", "-t", "30", "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.s.dir);
    }
}
