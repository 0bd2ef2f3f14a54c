//! A private PostgreSQL cluster a test starts, stops and restarts itself:
//! `taskd::pgcluster::Cluster` (the demo's too) behind an async API whose
//! calls run on a blocking thread, so the test's runtime (a proxy, a
//! worker) keeps running meanwhile, and which panics with the server's log
//! when the server does not do what the test asked.
//!
//! `PgCluster::start()` runs initdb into a fresh temporary directory and
//! starts the server on a free port of 127.0.0.1. `url(db)`, `database()`
//! (a fresh database with taskd's migrations), `stop(mode)`,
//! `start_again()`, `restart(mode)` and `stop_for(d, mode)` drive it; the
//! server is stopped (immediate) and the directory removed on drop.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use taskd::pgcluster::Cluster;
pub use taskd::pgcluster::StopMode;

/// A running private cluster; stopped and removed when dropped.
pub struct PgCluster {
    c: Arc<Cluster>,
}

impl PgCluster {
    /// initdb and start a new cluster; panics with the reason if it cannot.
    pub async fn start() -> PgCluster {
        let dir = std::env::temp_dir().join(format!(
            "taskd-pg-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let c = tokio::task::spawn_blocking(move || Cluster::create(dir))
            .await
            .expect("the cluster's setup thread")
            .unwrap_or_else(|e| panic!("the private cluster did not start: {e}"));
        PgCluster { c: Arc::new(c) }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.c.log()
    }

    pub fn port(&self) -> u16 {
        self.c.port()
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.c.port()))
    }

    /// The URL of database `db` on this cluster.
    pub fn url(&self, db: &str) -> String {
        self.c.url(db)
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
        self.blocking(move |c| c.stop(mode))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
    }

    /// Starts the stopped server again on the same port (pg_ctl waits until
    /// it accepts connections, crash recovery included).
    pub async fn start_again(&self) {
        self.blocking(|c| c.start())
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
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
        self.blocking(|c| c.is_running()).await
    }

    /// Runs a server command on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Cluster) -> T + Send + 'static,
    ) -> T {
        let c = self.c.clone();
        tokio::task::spawn_blocking(move || f(&c))
            .await
            .expect("a pg_ctl thread")
    }

    pub fn dir(&self) -> &Path {
        self.c.dir()
    }
}
