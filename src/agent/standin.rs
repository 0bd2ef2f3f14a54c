//! The stand-in process (`taskd observer-standin`): a tiny TCP server the
//! reference agent runs in place of a real observer (and of its own
//! processes), so "the observer answers on its SQL port" is a fact about a
//! real OS process. It holds each connection open until the peer closes it,
//! and exits with code 0 on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{name}: cannot listen on {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Listens on `addr` and holds connections until `shutdown` fires.
pub async fn run(name: &str, addr: SocketAddr, shutdown: CancellationToken) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind {
            name: name.to_string(),
            addr,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!(name, addr = %local, pid = std::process::id(), "stand-in listening");
    let conns = tokio_util::task::TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((sock, _peer)) => {
                    let stop = shutdown.clone();
                    conns.spawn(hold(sock, stop));
                }
                Err(e) => {
                    // Out of descriptors and the like: wait a little, go on.
                    tracing::warn!(name, error = %e, "accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                    }
                }
            },
        }
    }
    conns.close();
    conns.wait().await;
    tracing::info!(name, "stand-in stopped");
    Ok(())
}

/// Reads and discards until the peer closes or the stand-in stops.
async fn hold(mut sock: TcpStream, shutdown: CancellationToken) {
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            n = sock.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_until_shut_down() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        let addr = probe.local_addr().expect("addr");
        drop(probe);
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { run("test", addr, stop).await }
        });
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let held = loop {
            match TcpStream::connect(addr).await {
                Ok(s) => break s,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "never answered: {e}"
                    );
                    tokio::task::yield_now().await;
                }
            }
        };
        stop.cancel();
        let ended = task.await.expect("join");
        assert!(ended.is_ok());
        drop(held);
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
