//! `taskd demo` as a newcomer runs it: the real binary, its own agents and
//! inventory; a restart over the API it prints runs to SUCCESSFUL; it moves
//! off taken default ports, fails naming the address and flag of a taken
//! chosen one or a child that could not listen, starts its own PostgreSQL
//! when none answers, and leaves nothing in its TMPDIR on any way out.

use crate::support::demo::{entries, random_host_ip, Demo};
use crate::support::{wait_for, TestDb};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

/// Holds `addr` when it is free (it is taken either way afterwards).
fn occupy(addr: SocketAddr) -> Option<TcpListener> {
    TcpListener::bind(addr).ok()
}

/// The six host addresses a demo with this first address uses.
fn host_ips(first: &str) -> Vec<IpAddr> {
    let [a, b, c, d] = first.parse::<Ipv4Addr>().unwrap().octets();
    (0..6)
        .map(|i| IpAddr::V4(Ipv4Addr::new(a, b, c, d + i)))
        .collect()
}

/// A port on 127.0.0.1 nobody listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the demo's printed restart to SUCCESSFUL.
async fn restart_succeeds(demo: &Demo) {
    let restart = demo
        .stdout
        .iter()
        .find(|l| l.contains("curl -s -u") && l.contains("/restart"))
        .and_then(|l| l.split_whitespace().last())
        .expect("a curl line")
        .to_string();
    assert!(restart.starts_with(&demo.base), "{restart}");
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(&restart)
        .basic_auth(&demo.user, Some(&demo.password))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["successful"], true, "{created:#}");
    let id = created["data"]["id"].as_i64().unwrap();
    let url = demo.url(&format!("/api/v2/tasks/instances/{id}"));
    wait_for(
        "the demo restart to succeed",
        Duration::from_secs(60),
        || async {
            let t: serde_json::Value = http
                .get(&url)
                .basic_auth(&demo.user, Some(&demo.password))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            match t["data"]["status"].as_str() {
                Some("SUCCESSFUL") => Some(()),
                Some("FAILED") => panic!("demo task failed: {t:#}"),
                _ => None,
            }
        },
    )
    .await;
}

#[tokio::test]
async fn demo_runs_an_operation_and_stops_cleanly() {
    let db = TestDb::new().await;
    let port: u16 = 40000 + rand::random::<u16>() % 20000;
    let state = std::env::temp_dir().join(format!("taskd-demo-it-{:08x}", rand::random::<u32>()));
    let mut demo = Demo::start(&[
        ("DATABASE_URL", &db.url),
        ("TASKD_LISTEN", "127.0.0.1:0"),
        ("TASKD_DEMO_AGENT_PORT", &port.to_string()),
        ("TASKD_DEMO_OBSERVER_PORT", &(port - 1000).to_string()),
        ("TASKD_DEMO_STATE_DIR", state.to_str().unwrap()),
    ])
    .await
    .expect("the demo comes up");
    restart_succeeds(&demo).await;
    let status = demo.signal(libc::SIGINT).await;
    assert!(status.success(), "{status:?}");
    // Every process the demo's agents ran is gone.
    for i in 1..=6 {
        let dir = state.join(format!("agent-{i}"));
        assert_eq!(
            taskd::agent::kill_recorded_processes(&dir).unwrap_or(0),
            0,
            "{}",
            dir.display()
        );
    }
    // The state directory it was given stays; its temporary one goes.
    assert!(state.join("agent-1").exists());
    assert_eq!(entries(&demo.tmp), Vec::<std::path::PathBuf>::new());
    let _ = std::fs::remove_dir_all(&state);
}

/// A fresh clone where 8080, 2881 and 62888 are taken: the demo moves to
/// free ports, says so, serves, and leaves nothing behind on SIGTERM.
#[tokio::test]
async fn demo_moves_off_taken_default_ports() {
    let db = TestDb::new().await;
    let first = random_host_ip();
    let mut held = vec![occupy("127.0.0.1:8080".parse().unwrap())];
    for ip in host_ips(&first) {
        held.push(occupy(SocketAddr::new(ip, 2881)));
        held.push(occupy(SocketAddr::new(ip, 62888)));
    }
    let mut demo = Demo::start(&[("DATABASE_URL", &db.url), ("TASKD_DEMO_HOST_IP", &first)])
        .await
        .expect("the demo comes up on other ports");
    assert!(!demo.base.ends_with(":8080"), "{}", demo.base);
    let said = demo.stdout.join("\n");
    assert!(said.contains("127.0.0.1:8080 is taken"), "{said}");
    assert!(said.contains(&format!("{first}:2881 is taken")), "{said}");
    assert!(said.contains(&format!("{first}:62888 is taken")), "{said}");
    restart_succeeds(&demo).await;
    let status = demo.signal(libc::SIGTERM).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(entries(&demo.tmp), Vec::<std::path::PathBuf>::new());
    drop(held);
}

/// A port the user chose that is taken: one line naming the address and
/// the flag, exit 1, nothing left behind.
#[tokio::test]
async fn demo_fails_naming_a_taken_chosen_port_and_its_flag() {
    let db = TestDb::new().await;
    let first = random_host_ip();
    let second = host_ips(&first)[1];
    let holder = TcpListener::bind(SocketAddr::new(second, 0)).unwrap();
    let port = holder.local_addr().unwrap().port();
    let out = Demo::start(&[
        ("DATABASE_URL", &db.url),
        ("TASKD_DEMO_HOST_IP", &first),
        ("TASKD_DEMO_OBSERVER_PORT", &port.to_string()),
    ])
    .await
    .err()
    .expect("the demo refuses a taken port");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        out.stderr.last().map(String::as_str),
        Some(
            format!(
                "taskd: cannot listen on {second}:{port} (--observer-port / TASKD_DEMO_OBSERVER_PORT): \
                 Address already in use (os error 98); choose another port"
            )
            .as_str()
        ),
        "{out:?}"
    );
    assert_eq!(out.left, Vec::<std::path::PathBuf>::new());
}

/// An observer that cannot listen, though the port looked free: the
/// demo's own error line quotes the observer's, and the agents it had
/// started are stopped and their directory removed.
#[tokio::test]
async fn a_child_that_cannot_listen_is_quoted_in_the_demos_error() {
    let db = TestDb::new().await;
    let out = Demo::start(&[
        ("DATABASE_URL", &db.url),
        // The agents inherit it: their observer says what a bind failure
        // says, and exits.
        (
            "TASKD_AGENT_OBSERVER_CMD",
            "echo \"taskd: observer: cannot listen on {ip}:{port}: Address already in use (os error 98)\" >&2; exit 1",
        ),
    ])
    .await
    .err()
    .expect("the demo fails");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let last = out.stderr.last().cloned().unwrap_or_default();
    assert!(
        last.starts_with(
            "taskd: the demo agents did not start: the observer of demo-host-1 did not listen on "
        ),
        "{out:?}"
    );
    assert!(
        last.contains(": observer: cannot listen on ")
            && last.contains("Address already in use")
            && last.ends_with("(--observer-port / TASKD_DEMO_OBSERVER_PORT chooses another port)"),
        "{last}"
    );
    assert_eq!(out.left, Vec::<std::path::PathBuf>::new());
}

/// PostgreSQL installed but not running (nothing at the address the demo
/// looks at, no DATABASE_URL): the demo starts a private cluster, says so,
/// serves, and on SIGTERM stops it and removes it.
#[tokio::test]
async fn demo_starts_its_own_postgres_when_none_answers() {
    let closed = format!("127.0.0.1:{}", closed_port());
    let mut demo = Demo::start(&[
        ("TASKD_DEMO_LOCAL_POSTGRES", &closed),
        ("TASKD_LISTEN", "127.0.0.1:0"),
    ])
    .await
    .expect("the demo comes up with a private PostgreSQL");
    let said = demo.stdout.join("\n");
    assert!(
        said.contains(&format!("No PostgreSQL answers at {closed}")),
        "{said}"
    );
    let port: u16 = said
        .split("Private PostgreSQL listening on 127.0.0.1:")
        .nth(1)
        .and_then(|r| r.lines().next())
        .and_then(|p| p.trim().parse().ok())
        .expect("the private cluster's port");
    restart_succeeds(&demo).await;
    let status = demo.signal(libc::SIGTERM).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(entries(&demo.tmp), Vec::<std::path::PathBuf>::new());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the private cluster is stopped"
    );
}

/// No PostgreSQL and no server binaries: one line saying how to get them.
#[tokio::test]
async fn demo_without_postgres_or_its_binaries_says_how_to_get_them() {
    let closed = format!("127.0.0.1:{}", closed_port());
    let out = Demo::start(&[
        ("TASKD_DEMO_LOCAL_POSTGRES", &closed),
        ("TASKD_PG_BINDIR", "/nonexistent/bin"),
    ])
    .await
    .err()
    .expect("the demo cannot start");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(out.stderr.len(), 1, "one line: {out:?}");
    let line = &out.stderr[0];
    assert!(
        line.starts_with(&format!("taskd: no PostgreSQL answers at {closed} and no --database-url / DATABASE_URL was given")),
        "{line}"
    );
    assert!(line.contains("apt-get install postgresql"), "{line}");
    assert_eq!(out.left, Vec::<std::path::PathBuf>::new());
}
