//! The demo's database: the one `--database-url` names; else the
//! PostgreSQL answering at `--local-postgres` (127.0.0.1:5432); else a
//! private cluster the demo starts in its temporary directory from the
//! installed server binaries, and stops when it ends.

use crate::pgcluster::{self, Cluster, StopMode};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The demo's database URL and the private cluster serving it, if any.
pub struct Database {
    pub url: String,
    pub cluster: Option<PrivateCluster>,
}

/// A private cluster the demo started; [`PrivateCluster::stop`] stops it
/// and removes its directory.
pub struct PrivateCluster(Option<Cluster>);

impl PrivateCluster {
    pub async fn stop(mut self) {
        if let Some(c) = self.0.take() {
            let _ = tokio::task::spawn_blocking(move || {
                let _ = c.stop(StopMode::Fast);
                drop(c);
            })
            .await;
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        // Stopped without `stop` (a panic): block, but stop it.
        drop(self.0.take());
    }
}

/// Whether something accepts TCP connections at `addr` within a second.
async fn answers(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Where the demo's data goes. `given` is the URL the user gave
/// (`--database-url` / `DATABASE_URL`), if any; `dir` is where a private
/// cluster would live.
pub async fn choose(
    given: Option<&str>,
    local: SocketAddr,
    dir: &Path,
) -> anyhow::Result<Database> {
    if let Some(url) = given {
        return Ok(Database {
            url: url.to_string(),
            cluster: None,
        });
    }
    if answers(local).await {
        return Ok(Database {
            url: format!("postgres://postgres@{local}/taskd"),
            cluster: None,
        });
    }
    let bindir = match pgcluster::bindir() {
        Ok(d) => d,
        Err(e) => anyhow::bail!(
            "no PostgreSQL answers at {local} and no --database-url / DATABASE_URL was given, \
             and a private one cannot be started: {e}"
        ),
    };
    let at = dir.join("postgres");
    println!(
        "No PostgreSQL answers at {local} and no --database-url / DATABASE_URL was given: \
         starting a private one from {} in {} (removed when the demo stops)",
        bindir.display(),
        at.display()
    );
    let created = tokio::task::spawn_blocking(move || Cluster::create(at)).await?;
    let cluster = created.map_err(|e| anyhow::anyhow!("cannot start a private PostgreSQL: {e}"))?;
    println!(
        "Private PostgreSQL listening on 127.0.0.1:{}",
        cluster.port()
    );
    Ok(Database {
        url: cluster.url("taskd"),
        cluster: Some(PrivateCluster(Some(cluster))),
    })
}
