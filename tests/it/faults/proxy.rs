//! A TCP proxy between taskd and PostgreSQL that a test drives, to inject
//! network faults without touching the server.
//!
//! `Proxy::start(upstream)` listens on 127.0.0.1:0 and forwards every
//! accepted connection to `upstream` (a fresh upstream connection per client
//! connection, so the upstream may restart under it). `proxy.url(db_url)`
//! rewrites a PostgreSQL URL to go through it. The faults, each switched on
//! and off while connections are open:
//!
//! - `refuse()`: new connections are reset at once (the client's connect
//!   fails); open connections keep working.
//! - `black_hole()`: nothing is forwarded in either direction and nothing is
//!   reset; new connections are accepted and then hear nothing. Bytes are
//!   held, not lost, as TCP retransmits through a partition: after
//!   `normal()` they arrive. Combine with `cut_all()` for a partition the
//!   connections do not survive.
//! - `cut_all()`: every open connection is reset now, both sides (the
//!   backend ends too); later connections are not affected.
//! - `drop_next_reply(after)` / `drop_reply_to(pattern, after)`: the server's
//!   next reply (every message up to and including its ReadyForQuery) on the
//!   connection whose next client message contains `pattern` (any message if
//!   none) is swallowed once. `AfterDrop::Reset` then resets that connection,
//!   so the client cannot know whether its statement (a COMMIT, say) took
//!   effect; `AfterDrop::Hang` keeps it open and silent. sqlx prepares a
//!   statement (its text in a Parse message) before it runs it, so a
//!   pattern from a statement's text matches the prepare, not the run: to
//!   lose the reply of work that was done, match "COMMIT" (sqlx sends it as
//!   a simple query) or use `sqlx::raw_sql`.
//! - `set_latency(d)`: every chunk forwarded, either way, waits `d` first.
//! - `normal()`: no refusal, no black hole (latency is left as set).
//!
//! Counters (`accepted`, `refused`, `open_connections`, `replies_dropped`)
//! let a test wait for a fault to have taken effect.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with new and open connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Refuse,
    BlackHole,
}

/// What happens to a connection whose reply was swallowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterDrop {
    /// Reset the connection: the client sees it end without an answer.
    Reset,
    /// Keep it open: the client waits for an answer that never comes.
    Hang,
}

#[derive(Clone, Copy, Debug)]
struct Control {
    mode: Mode,
    latency: Duration,
}

struct DropReply {
    pattern: Option<Vec<u8>>,
    after: AfterDrop,
}

struct Shared {
    upstream: SocketAddr,
    control: watch::Sender<Control>,
    cut: watch::Sender<u64>,
    drop_reply: Mutex<Option<DropReply>>,
    accepted: AtomicU64,
    refused: AtomicU64,
    open: AtomicUsize,
    replies_dropped: AtomicU64,
}

/// A running proxy; stopped (and every connection reset) when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the proxy's listener");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            upstream,
            control: watch::Sender::new(Control {
                mode: Mode::Normal,
                latency: Duration::ZERO,
            }),
            cut: watch::Sender::new(0),
            drop_reply: Mutex::new(None),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            replies_dropped: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Proxy {
            addr,
            shared,
            accept,
        }
    }

    /// A proxy in front of the server of a `postgres://` URL.
    pub async fn for_url(db_url: &str) -> Proxy {
        let u = url::Url::parse(db_url).expect("a PostgreSQL URL");
        let host = u.host_str().expect("a host in the URL");
        let port = u.port().unwrap_or(5432);
        let upstream = tokio::net::lookup_host((host, port))
            .await
            .expect("the upstream's address")
            .next()
            .expect("an upstream address");
        Proxy::start(upstream).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `db_url` with its host and port replaced by the proxy's.
    pub fn url(&self, db_url: &str) -> String {
        let mut u = url::Url::parse(db_url).expect("a PostgreSQL URL");
        u.set_host(Some(&self.addr.ip().to_string()))
            .expect("a URL that takes a host");
        u.set_port(Some(self.addr.port()))
            .expect("a URL that takes a port");
        u.to_string()
    }

    pub fn mode(&self) -> Mode {
        self.shared.control.borrow().mode
    }

    fn set_mode(&self, mode: Mode) {
        self.shared.control.send_modify(|c| c.mode = mode);
    }

    /// Forward again: no refusal, no black hole.
    pub fn normal(&self) {
        self.set_mode(Mode::Normal);
    }

    /// Reset new connections at once; open ones keep working.
    pub fn refuse(&self) {
        self.set_mode(Mode::Refuse);
    }

    /// Forward nothing either way, reset nothing; held bytes flow on
    /// `normal()`.
    pub fn black_hole(&self) {
        self.set_mode(Mode::BlackHole);
    }

    /// Reset every open connection (client and server side) now.
    pub fn cut_all(&self) {
        self.shared.cut.send_modify(|g| *g += 1);
    }

    /// Every chunk forwarded waits `latency` first (zero: none).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.control.send_modify(|c| c.latency = latency);
    }

    /// Swallow the next reply of the server, once.
    pub fn drop_next_reply(&self, after: AfterDrop) {
        *self.shared.drop_reply.lock().unwrap() = Some(DropReply {
            pattern: None,
            after,
        });
    }

    /// Swallow, once, the reply to the next client message that contains
    /// `pattern` (bytes as sent, so case-sensitive: "COMMIT", a table name).
    pub fn drop_reply_to(&self, pattern: &str, after: AfterDrop) {
        *self.shared.drop_reply.lock().unwrap() = Some(DropReply {
            pattern: Some(pattern.as_bytes().to_vec()),
            after,
        });
    }

    /// Whether a reply drop is still waiting for its message.
    pub fn reply_drop_pending(&self) -> bool {
        self.shared.drop_reply.lock().unwrap().is_some()
    }

    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections forwarded to the upstream and not yet closed.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    pub fn replies_dropped(&self) -> u64 {
        self.shared.replies_dropped.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            // Out of descriptors and the like: try again shortly.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shared.control.borrow().mode == Mode::Refuse {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            reset(client);
            continue;
        }
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(connection(client, shared.clone()));
    }
}

/// Closes with RST rather than FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

struct OpenGuard<'a>(&'a AtomicUsize);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How one direction of a connection ended.
enum End {
    /// End of stream or an error: close the other side normally.
    Closed,
    /// A swallowed reply asked for a reset.
    Reset,
}

async fn connection(mut client: TcpStream, shared: Arc<Shared>) {
    let mut cut = shared.cut.subscribe();
    cut.mark_unchanged();
    let upstream = tokio::select! {
        r = TcpStream::connect(shared.upstream) => r,
        _ = cut.changed() => return reset(client),
    };
    let mut upstream = match upstream {
        Ok(u) => u,
        // The server is down: the client sees its connection reset.
        Err(_) => return reset(client),
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    shared.open.fetch_add(1, Ordering::SeqCst);
    let _open = OpenGuard(&shared.open);
    // Set by the client->server pump when this connection's message matched
    // an armed reply drop; taken by the server->client pump.
    let armed: Mutex<Option<AfterDrop>> = Mutex::new(None);
    let end = {
        let (cr, cw) = client.split();
        let (ur, uw) = upstream.split();
        tokio::select! {
            e = to_server(cr, uw, &shared, &armed) => e,
            e = to_client(ur, cw, &shared, &armed) => e,
            _ = cut.changed() => End::Reset,
        }
    };
    match end {
        End::Reset => {
            reset(client);
            reset(upstream);
        }
        End::Closed => {}
    }
}

/// Waits while the proxy is a black hole; returns the latency to apply.
async fn pass(control: &mut watch::Receiver<Control>) -> Duration {
    loop {
        let c = *control.borrow_and_update();
        if c.mode != Mode::BlackHole {
            return c.latency;
        }
        if control.changed().await.is_err() {
            // The proxy is gone; the connection is about to be reset.
            std::future::pending::<()>().await;
        }
    }
}

async fn to_server(
    mut r: ReadHalf<'_>,
    mut w: WriteHalf<'_>,
    shared: &Shared,
    armed: &Mutex<Option<AfterDrop>>,
) -> End {
    let mut control = shared.control.subscribe();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        pass(&mut control).await;
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return End::Closed,
            Ok(n) => n,
        };
        // A chunk read just as the black hole began is held too.
        let latency = pass(&mut control).await;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        {
            let mut drop_reply = shared.drop_reply.lock().unwrap();
            let matches = match &*drop_reply {
                None => false,
                Some(d) => match &d.pattern {
                    None => true,
                    Some(p) => buf[..n].windows(p.len()).any(|win| win == &p[..]),
                },
            };
            if matches {
                let d = drop_reply.take().expect("checked above");
                *armed.lock().unwrap() = Some(d.after);
            }
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return End::Closed;
        }
    }
}

async fn to_client(
    mut r: ReadHalf<'_>,
    mut w: WriteHalf<'_>,
    shared: &Shared,
    armed: &Mutex<Option<AfterDrop>>,
) -> End {
    let mut control = shared.control.subscribe();
    let mut buf = vec![0u8; 64 * 1024];
    let mut swallow: Option<(Swallow, AfterDrop)> = None;
    loop {
        pass(&mut control).await;
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return End::Closed,
            Ok(n) => n,
        };
        let latency = pass(&mut control).await;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if swallow.is_none() {
            if let Some(after) = armed.lock().unwrap().take() {
                swallow = Some((Swallow::default(), after));
            }
        }
        let mut from = 0;
        if let Some((s, after)) = &mut swallow {
            match s.feed(&buf[..n]) {
                None => continue,
                Some(end) => {
                    let after = *after;
                    swallow = None;
                    shared.replies_dropped.fetch_add(1, Ordering::SeqCst);
                    match after {
                        AfterDrop::Reset => return End::Reset,
                        AfterDrop::Hang => from = end,
                    }
                }
            }
        }
        if from < n && w.write_all(&buf[from..n]).await.is_err() {
            return End::Closed;
        }
    }
}

/// Frames server messages (a type byte, a big-endian length that counts
/// itself, the body) to find the end of a reply: its ReadyForQuery ('Z').
#[derive(Default)]
struct Swallow {
    header: Vec<u8>,
    remaining: usize,
    in_ready: bool,
}

impl Swallow {
    /// Consumes `data`; returns where the reply ended in it, if it did.
    fn feed(&mut self, data: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < data.len() {
            if self.remaining == 0 {
                self.header.push(data[i]);
                i += 1;
                if self.header.len() == 5 {
                    let len = u32::from_be_bytes([
                        self.header[1],
                        self.header[2],
                        self.header[3],
                        self.header[4],
                    ]) as usize;
                    self.in_ready = self.header[0] == b'Z';
                    self.remaining = len.saturating_sub(4);
                    self.header.clear();
                    if self.remaining == 0 && self.in_ready {
                        return Some(i);
                    }
                }
            } else {
                let take = self.remaining.min(data.len() - i);
                i += take;
                self.remaining -= take;
                if self.remaining == 0 && self.in_ready {
                    return Some(i);
                }
            }
        }
        None
    }
}
