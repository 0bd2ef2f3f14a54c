//! Test support: a fresh, migrated PostgreSQL database per test, dropped
//! afterwards, and helpers that wait on conditions with a deadline.

pub mod app;
pub mod browser;
pub mod demo;
pub mod engine;
pub mod routes;
pub mod served;
pub mod world;

use sqlx::PgPool;
use std::future::Future;
use std::time::{Duration, Instant};

/// The server tests create their databases on.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

fn url_for(db: &str) -> String {
    let admin = admin_url();
    match admin.rfind('/') {
        Some(i) if admin[..i].contains("//") => format!("{}/{}", &admin[..i], db),
        _ => format!("{admin}/{db}"),
    }
}

/// A fresh database with every migration applied; dropped when this is.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let name = format!(
            "taskd_test_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let admin = PgPool::connect(&admin_url())
            .await
            .expect("PostgreSQL must be reachable (set TEST_DATABASE_URL)");
        sqlx::query(&format!("create database {name}"))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let url = url_for(&name);
        taskd::db::migrate(&url)
            .await
            .expect("migrate test database");
        let pool = taskd::db::connect(&url, 20)
            .await
            .expect("connect test database");
        TestDb { name, url, pool }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await, and the test's runtime is blocked while we
        // wait: use a small runtime on a thread of its own, and let
        // `with (force)` end this database's connections (closing the pool
        // here would wait on the blocked runtime).
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async move {
                    if let Ok(admin) = PgPool::connect(&admin_url()).await {
                        let _ =
                            sqlx::query(&format!("drop database if exists {name} with (force)"))
                                .execute(&admin)
                                .await;
                        admin.close().await;
                    }
                });
            }
        })
        .join();
    }
}

/// Polls `check` until it returns Some or `deadline` passes (then panics
/// naming `what`).
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
