//! The reference agent and its client, with real processes on 127.0.0.1:
//! starts, stops, restarts, idempotency keys, faults, the agent's own
//! restart, and errors. No database needed.

use crate::support::wait_for;
use rand::Rng;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use taskd::agent::protocol::{AGENT_PROCESSES, POS_PROXY};
use taskd::agent::{
    kill_recorded_processes, process, spawn_agent, AgentClient, AgentConfig, ClientError,
    FaultSpec, ObserverStatus, OnShutdown, Operation, RunningAgent, ServerError, StartObserver,
    StopObserver,
};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(15);

/// A reference agent on 127.0.0.1:0 with a state directory of its own.
/// `finish` stops it and checks that no process it ran is left; dropping it
/// (a failed test) kills whatever its state file names and removes the
/// directory.
struct TestAgent {
    dir: PathBuf,
    cfg: AgentConfig,
    agent: Option<RunningAgent>,
    client: AgentClient,
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!(
        "taskd-agent-it-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ))
}

/// A loopback address of its own (Linux routes all of 127/8 to lo), so
/// tests running side by side never meet on a port: not on the observer's,
/// nor on the ones stand-ins and listeners take with port 0.
fn own_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        rand::thread_rng().gen_range(1..=254),
        rand::random(),
        rand::thread_rng().gen_range(1..=254),
    ))
}

/// A port no one is expected to use on an [`own_ip`] address.
fn some_port() -> u16 {
    rand::thread_rng().gen_range(20000..30000)
}

fn alive(pid: u32) -> bool {
    process::is_alive(pid, None)
}

async fn answers(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

fn start_on(port: u16) -> StartObserver {
    StartObserver { port: Some(port) }
}

fn graceful() -> StopObserver {
    StopObserver::default()
}

impl TestAgent {
    async fn start() -> TestAgent {
        TestAgent::start_with(|_| {}).await
    }

    async fn start_with(tune: impl FnOnce(&mut AgentConfig)) -> TestAgent {
        let dir = temp_dir();
        let mut cfg = AgentConfig::new(&dir);
        cfg.standin_exe = PathBuf::from(env!("CARGO_BIN_EXE_taskd"));
        cfg.observer_ip = Some(own_ip());
        cfg.observer_port = some_port();
        cfg.stop_timeout = Duration::from_secs(5);
        cfg.on_shutdown = OnShutdown::Stop;
        tune(&mut cfg);
        let agent = spawn_agent(cfg.clone(), "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("agent starts");
        let client = agent.client(http());
        TestAgent {
            dir,
            cfg,
            agent: Some(agent),
            client,
        }
    }

    /// Where the observer listens.
    fn observer_addr(&self) -> SocketAddr {
        SocketAddr::new(
            self.cfg.observer_ip.expect("tests set the observer IP"),
            self.cfg.observer_port,
        )
    }

    fn url(&self) -> String {
        self.client.base_url().to_string()
    }

    /// Stops the agent (by its configured policy) and starts a new one on
    /// the same state directory and a new port.
    async fn restart(&mut self, policy_now: OnShutdown) {
        if let Some(a) = self.agent.take() {
            a.shutdown().await.expect("agent stops");
        }
        self.cfg.on_shutdown = policy_now;
        let agent = spawn_agent(self.cfg.clone(), "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("agent restarts");
        self.client = agent.client(http());
        self.agent = Some(agent);
    }

    /// Stops the agent with the stop policy and checks every process it ran
    /// is gone.
    async fn finish(mut self) {
        let status = self.client.status().await.expect("status before finish");
        let mut pids: Vec<u32> = status.processes.iter().filter_map(|p| p.pid).collect();
        pids.extend(status.observer.pid);
        if let Some(a) = self.agent.take() {
            a.shutdown().await.expect("agent stops");
        }
        for pid in pids {
            assert!(!alive(pid), "pid {pid} outlived its agent");
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(a) = self.agent.take() {
            drop(a);
        }
        let _ = kill_recorded_processes(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn wait_listening(client: &AgentClient) -> ObserverStatus {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    client
        .wait_observer(
            "the observer to answer",
            |s| s.listening,
            deadline,
            &CancellationToken::new(),
        )
        .await
        .expect("observer answers")
}

#[tokio::test]
async fn start_runs_a_real_process_whose_port_answers() {
    let t = TestAgent::start().await;
    let port = t.cfg.observer_port;
    assert!(!answers(t.observer_addr()).await);
    let started = t
        .client
        .start_observer("1:1", &StartObserver::default())
        .await
        .expect("start");
    let pid = started.pid.expect("a pid");
    assert!(started.is_running());
    assert_eq!(started.port, port);
    assert!(alive(pid));
    let up = wait_listening(&t.client).await;
    assert_eq!(up.pid, Some(pid));
    assert_eq!(up.ip, t.observer_addr().ip());
    assert!(answers(t.observer_addr()).await);
    assert!(
        !up.active,
        "a started observer is not active until activated"
    );
    let active = t.client.activate_observer("2:1").await.expect("activate");
    assert!(active.active);
    t.finish().await;
}

#[tokio::test]
async fn graceful_stop_ends_the_process_and_its_pid_disappears() {
    let t = TestAgent::start().await;
    let port = t.cfg.observer_port;
    let pid = t
        .client
        .start_observer("1:1", &start_on(port))
        .await
        .expect("start")
        .pid
        .expect("pid");
    wait_listening(&t.client).await;
    t.client.activate_observer("2:1").await.expect("activate");
    let stopped = t
        .client
        .stop_observer("3:1", &graceful())
        .await
        .expect("stop");
    assert!(!stopped.is_running());
    assert_eq!(stopped.pid, None);
    assert!(!stopped.active);
    assert_eq!(stopped.last_exit.as_deref(), Some("exited with code 0"));
    assert!(!alive(pid), "pid {pid} still there after stop");
    assert!(!answers(t.observer_addr()).await);
    // Stopping a stopped observer is a no-op, not an error.
    let again = t
        .client
        .stop_observer("4:1", &graceful())
        .await
        .expect("stop again");
    assert!(!again.is_running());
    t.finish().await;
}

#[tokio::test]
async fn force_stop_kills_with_sigkill_at_once() {
    let t = TestAgent::start().await;
    let pid = t
        .client
        .start_observer("1:1", &StartObserver::default())
        .await
        .expect("start")
        .pid
        .expect("pid");
    wait_listening(&t.client).await;
    let force = StopObserver {
        force: true,
        timeout_ms: None,
    };
    let stopped = t
        .client
        .stop_observer("2:1", &force)
        .await
        .expect("force stop");
    assert_eq!(
        stopped.last_exit.as_deref(),
        Some("killed by signal 9 (SIGKILL)")
    );
    assert!(!alive(pid));
    t.finish().await;
}

#[tokio::test]
async fn a_graceful_stop_escalates_to_sigkill_when_sigterm_is_ignored() {
    let t = TestAgent::start_with(|cfg| {
        cfg.observer_cmd = Some("trap '' TERM; exec sleep 600".to_string());
    })
    .await;
    let pid = t
        .client
        .start_observer("1:1", &StartObserver::default())
        .await
        .expect("start")
        .pid
        .expect("pid");
    assert!(alive(pid));
    // The shell must have ignored SIGTERM before the stop: it has once it
    // became sleep.
    wait_for("the shell to exec sleep", DEADLINE, || async {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        (comm.trim() == "sleep").then_some(())
    })
    .await;
    let began = Instant::now();
    let stop = StopObserver {
        force: false,
        timeout_ms: Some(300),
    };
    let stopped = t.client.stop_observer("2:1", &stop).await.expect("stop");
    assert!(began.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        stopped.last_exit.as_deref(),
        Some("killed by signal 9 (SIGKILL)")
    );
    assert!(!alive(pid));
    t.finish().await;
}

#[tokio::test]
async fn a_restart_sequence_changes_the_observer_pid() {
    let t = TestAgent::start().await;
    let c = &t.client;
    let first = c
        .start_observer("1:1", &StartObserver::default())
        .await
        .expect("start")
        .pid
        .expect("pid");
    wait_listening(c).await;
    c.activate_observer("2:1").await.expect("activate");
    // The restart template: stop server, stop process, start process, wait
    // active, start server.
    c.deactivate_observer("3:1").await.expect("deactivate");
    c.stop_observer("4:1", &graceful()).await.expect("stop");
    assert!(!alive(first));
    let second = c
        .start_observer("5:1", &StartObserver::default())
        .await
        .expect("start again")
        .pid
        .expect("pid");
    assert_ne!(first, second);
    wait_listening(c).await;
    let active = c.activate_observer("6:1").await.expect("activate again");
    assert!(active.active);
    assert_eq!(active.pid, Some(second));
    t.finish().await;
}

#[tokio::test]
async fn activate_refuses_an_observer_that_is_not_running() {
    let t = TestAgent::start().await;
    let err = t
        .client
        .activate_observer("1:1")
        .await
        .expect_err("nothing to activate");
    assert_eq!(err.status(), Some(409));
    assert!(err.to_string().contains("not running"), "{err}");
    t.finish().await;
}

#[tokio::test]
async fn stop_all_and_start_all_change_the_agent_process_pids() {
    let t = TestAgent::start().await;
    let before = t.client.status().await.expect("status");
    let old: Vec<u32> = AGENT_PROCESSES
        .iter()
        .map(|n| {
            let p = before.process(n).expect("an agent process");
            assert!(p.is_running(), "{n} runs on a fresh agent");
            p.pid.expect("pid")
        })
        .collect();
    let pos_proxy = before.process(POS_PROXY).and_then(|p| p.pid);

    let stopped = t.client.stop_all("1:1").await.expect("stop all");
    assert!(stopped.iter().all(|p| !p.is_running() && p.pid.is_none()));
    for pid in &old {
        assert!(!alive(*pid));
    }
    let started = t.client.start_all("2:1").await.expect("start all");
    assert_eq!(started.len(), AGENT_PROCESSES.len());
    for (p, old_pid) in started.iter().zip(&old) {
        let pid = p.pid.expect("started");
        assert_ne!(pid, *old_pid, "{} kept its pid", p.name);
        assert!(alive(pid));
    }
    let after = t.client.status().await.expect("status");
    assert_eq!(
        after.process(POS_PROXY).and_then(|p| p.pid),
        pos_proxy,
        "stop-all leaves the pos proxy alone"
    );
    t.finish().await;
}

#[tokio::test]
async fn a_pos_proxy_restart_changes_its_pid() {
    let t = TestAgent::start().await;
    let before = t
        .client
        .status()
        .await
        .expect("status")
        .process(POS_PROXY)
        .and_then(|p| p.pid)
        .expect("pos proxy runs");
    let after = t.client.restart_pos_proxy("1:1").await.expect("restart");
    let pid = after.pid.expect("running again");
    assert_ne!(pid, before);
    assert!(alive(pid));
    assert!(!alive(before));
    t.finish().await;
}

#[tokio::test]
async fn a_repeated_key_is_performed_once() {
    let t = TestAgent::start().await;
    let c = &t.client;
    let first = c
        .start_observer("7:1", &StartObserver::default())
        .await
        .expect("start");
    let again = c
        .start_observer("7:1", &StartObserver::default())
        .await
        .expect("repeat");
    assert_eq!(again, first, "a repeat answers the recorded result");
    c.stop_observer("8:1", &graceful()).await.expect("stop");
    // Under the old key the start is not performed again: the observer
    // stays stopped and the answer is still the first one.
    let replay = c
        .start_observer("7:1", &StartObserver::default())
        .await
        .expect("replay");
    assert_eq!(replay.pid, first.pid);
    assert!(!c.observer_status().await.expect("status").is_running());
    // The same key for a different request is refused.
    let other_port = StartObserver {
        port: Some(t.cfg.observer_port + 1),
    };
    let err = c
        .start_observer("7:1", &other_port)
        .await
        .expect_err("key reuse");
    assert_eq!(err.status(), Some(409));

    let records = c.records().await.expect("records");
    let starts: Vec<_> = records.iter().filter(|r| r.key == "7:1").collect();
    assert_eq!(starts.len(), 1, "one performance: {records:?}");
    assert_eq!(starts[0].seen, 3);
    assert_eq!(starts[0].operation, Operation::ObserverStart);
    // A new run_time is a new key, performed again.
    let rerun = c
        .start_observer("7:2", &StartObserver::default())
        .await
        .expect("next run");
    assert_ne!(rerun.pid, first.pid);
    t.finish().await;
}

#[tokio::test]
async fn concurrent_calls_with_one_key_are_performed_once() {
    let t = TestAgent::start().await;
    let c = &t.client;
    c.set_fault(&FaultSpec::stall(Operation::PosProxyRestart, 1, 300))
        .await
        .expect("arm stall");
    let (a, b) = tokio::join!(c.restart_pos_proxy("9:1"), c.restart_pos_proxy("9:1"));
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert_eq!(a.pid, b.pid);
    let records = c.records().await.expect("records");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].seen, 2);
    t.finish().await;
}

#[tokio::test]
async fn injected_failures_fail_the_next_n_calls_then_succeed() {
    let t = TestAgent::start().await;
    let c = &t.client;
    let armed = c
        .set_fault(&FaultSpec::fail(Operation::ObserverStart, 2))
        .await
        .expect("arm");
    assert_eq!(armed.len(), 1);
    for _ in 0..2 {
        let err = c
            .start_observer("1:1", &StartObserver::default())
            .await
            .expect_err("injected failure");
        assert_eq!(err.status(), Some(500));
        assert!(err.to_string().contains("injected fault"), "{err}");
        assert!(!c.observer_status().await.expect("status").is_running());
    }
    let ok = c
        .start_observer("1:1", &StartObserver::default())
        .await
        .expect("third call succeeds");
    assert!(alive(ok.pid.expect("pid")));
    assert!(c.faults().await.expect("faults").is_empty());
    let records = c.records().await.expect("records");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].seen, 3, "the failed calls count as seen");

    // Faults on reads, and clearing them.
    c.set_fault(&FaultSpec::fail(Operation::AgentStatus, 5))
        .await
        .expect("arm");
    assert_eq!(c.status().await.expect_err("fails").status(), Some(500));
    c.clear_faults().await.expect("clear");
    assert!(c.status().await.is_ok());
    t.finish().await;
}

#[tokio::test]
async fn an_injected_stall_delays_the_answer_and_a_timed_out_caller_retries_safely() {
    let t = TestAgent::start().await;
    let c = &t.client;
    c.set_fault(&FaultSpec::stall(Operation::ObserverStatus, 1, 300))
        .await
        .expect("arm");
    let began = Instant::now();
    c.observer_status().await.expect("stalled status");
    assert!(began.elapsed() >= Duration::from_millis(300));
    let began = Instant::now();
    c.observer_status().await.expect("status");
    assert!(
        began.elapsed() < Duration::from_millis(300),
        "one stall only"
    );

    // A caller whose timeout is shorter than the stall sees the agent as
    // unreachable; its retry under the same key waits for the first
    // performance and gets its answer.
    c.set_fault(&FaultSpec::stall(Operation::ObserverStart, 1, 800))
        .await
        .expect("arm");
    let impatient = AgentClient::new(
        reqwest::Client::builder()
            .timeout(Duration::from_millis(150))
            .build()
            .expect("client"),
        &t.url(),
    )
    .expect("client");
    let err = impatient
        .start_observer("5:1", &StartObserver::default())
        .await
        .expect_err("times out");
    assert!(err.is_unreachable(), "{err}");
    let answer = c
        .start_observer("5:1", &StartObserver::default())
        .await
        .expect("retry");
    let records = c.records().await.expect("records");
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r.seen, 2);
    assert!((r.finished_at - r.started_at).num_milliseconds() >= 800);
    assert_eq!(answer.pid, r.response["pid"].as_u64().map(|p| p as u32));
    t.finish().await;
}

#[tokio::test]
async fn performances_never_overlap() {
    let t = TestAgent::start().await;
    let c = &t.client;
    c.start_observer("0:1", &StartObserver::default())
        .await
        .expect("start");
    wait_listening(c).await;
    c.set_fault(&FaultSpec::stall(Operation::ObserverActivate, 3, 40))
        .await
        .expect("arm");
    let keys: Vec<String> = (1..=6).map(|i| format!("{i}:1")).collect();
    let calls = keys.iter().enumerate().map(|(i, k)| async move {
        if i % 2 == 0 {
            c.activate_observer(k).await.map(|_| ())
        } else {
            c.restart_pos_proxy(k).await.map(|_| ())
        }
    });
    for r in futures::future::join_all(calls).await {
        r.expect("call");
    }
    let records = c.records().await.expect("records");
    assert_eq!(records.len(), 7);
    let mut seen = std::collections::HashSet::new();
    for r in &records {
        assert!(seen.insert((r.key.clone(), r.operation)), "{} twice", r.key);
        assert_eq!(r.seen, 1);
    }
    for pair in records.windows(2) {
        assert!(
            pair[0].finished_at <= pair[1].started_at,
            "{} and {} overlap",
            pair[0].key,
            pair[1].key
        );
    }
    t.finish().await;
}

#[tokio::test]
async fn a_restarted_agent_keeps_its_state_and_adopts_the_running_observer() {
    let mut t = TestAgent::start_with(|cfg| cfg.on_shutdown = OnShutdown::Leave).await;
    let started = t
        .client
        .start_observer("1:1", &StartObserver::default())
        .await
        .expect("start");
    let pid = started.pid.expect("pid");
    wait_listening(&t.client).await;
    t.client.activate_observer("2:1").await.expect("activate");
    let before = t.client.status().await.expect("status");

    t.restart(OnShutdown::Stop).await;
    assert!(alive(pid), "the observer outlives its agent");
    let after = t.client.status().await.expect("status after restart");
    assert_ne!(after.agent.listen, before.agent.listen);
    assert_eq!(after.observer.pid, Some(pid));
    assert!(after.observer.active && after.observer.listening);
    assert_eq!(after.processes, before.processes, "agent processes adopted");
    // Recorded keys survive: a repeat is still a replay.
    let replay = t
        .client
        .start_observer("1:1", &StartObserver::default())
        .await
        .expect("replay");
    assert_eq!(replay, started);
    let records = t.client.records().await.expect("records");
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].seen, 2);
    // The adopted process is stopped like any other.
    let stopped = t
        .client
        .stop_observer("3:1", &graceful())
        .await
        .expect("stop adopted");
    assert!(!stopped.is_running());
    assert!(!alive(pid));
    t.finish().await;
}

#[tokio::test]
async fn a_restarted_agent_marks_processes_that_died_meanwhile_stopped() {
    let mut t = TestAgent::start_with(|cfg| cfg.on_shutdown = OnShutdown::Leave).await;
    let pid = t
        .client
        .start_observer("1:1", &StartObserver::default())
        .await
        .expect("start")
        .pid
        .expect("pid");
    if let Some(a) = t.agent.take() {
        a.shutdown().await.expect("stop agent");
    }
    // The observer dies while no agent watches it.
    kill_recorded_processes(&t.dir).expect("kill");
    wait_for("the observer to die", DEADLINE, || async {
        (!alive(pid)).then_some(())
    })
    .await;
    t.restart(OnShutdown::Stop).await;
    let s = t.client.observer_status().await.expect("status");
    assert!(!s.is_running());
    assert!(!s.active);
    let restarted = t
        .client
        .start_observer("2:1", &StartObserver::default())
        .await
        .expect("start again");
    assert_ne!(restarted.pid, Some(pid));
    t.client.start_all("3:1").await.expect("start all again");
    t.finish().await;
}

#[tokio::test]
async fn a_state_dir_in_use_is_refused() {
    let t = TestAgent::start().await;
    let second = spawn_agent(t.cfg.clone(), "127.0.0.1:0".parse().expect("addr")).await;
    match second {
        Err(e @ ServerError::Locked { .. }) => {
            assert!(e.to_string().contains("in use"), "{e}");
        }
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("two agents shared one state directory"),
    }
    t.finish().await;
}

#[tokio::test]
async fn an_unreachable_agent_error_names_the_url() {
    let url = format!("http://{}:{}", own_ip(), some_port());
    let c = AgentClient::new(http(), &url).expect("client");
    let err = c.status().await.expect_err("nothing listens");
    assert!(err.is_unreachable(), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("agent unreachable at {url}")),
        "{msg}"
    );
    let err = c.stop_all("1:1").await.expect_err("nothing listens");
    assert!(matches!(err, ClientError::Unreachable { .. }));
}

#[tokio::test]
async fn bad_input_gets_a_json_error_not_a_panic() {
    let t = TestAgent::start().await;
    let http = http();
    let base = t.url();
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            http.post(format!("{base}/api/v1/observer/stop"))
                .header("Idempotency-Key", "1:1")
                .body("{not json"),
            400,
            "bad request body",
        ),
        (
            http.post(format!("{base}/api/v1/observer/stop"))
                .header("Idempotency-Key", "1:1")
                .body(r#"{"forse": true}"#),
            400,
            "unknown field",
        ),
        (
            http.post(format!("{base}/api/v1/observer/start")),
            400,
            "Idempotency-Key",
        ),
        (
            http.post(format!("{base}/api/v1/observer/start"))
                .header("Idempotency-Key", "has space"),
            400,
            "visible ASCII",
        ),
        (
            http.post(format!("{base}/api/v1/observer/start"))
                .header("Idempotency-Key", "1:1")
                .body(r#"{"port": 0}"#),
            400,
            "port",
        ),
        (
            http.post(format!("{base}/api/v1/faults"))
                .body(r#"{"operation": "reboot", "fail_next": 1}"#),
            400,
            "unknown variant",
        ),
        (
            http.delete(format!("{base}/api/v1/faults?operation=reboot")),
            400,
            "unknown operation",
        ),
        (
            http.get(format!("{base}/api/v1/records?bogus=1")),
            400,
            "bogus",
        ),
        (
            http.get(format!("{base}/api/v1/nope")),
            404,
            "no such endpoint",
        ),
        (
            http.delete(format!("{base}/api/v1/status")),
            405,
            "not allowed",
        ),
    ];
    for (req, status, needle) in cases {
        let resp = req.send().await.expect("answer");
        assert_eq!(resp.status().as_u16(), status);
        let body: serde_json::Value = resp.json().await.expect("a JSON body");
        let error = body["error"].as_str().expect("an error field");
        assert!(error.contains(needle), "{error:?} lacks {needle:?}");
    }
    assert!(t.client.records().await.expect("records").is_empty());
    t.finish().await;
}

/// Kills what a state directory names and removes it, when dropped.
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = kill_recorded_processes(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn the_taskd_agent_command_serves_and_stops_its_processes_on_sigterm() {
    let dir = temp_dir();
    // Declared before the agent's child, so dropped after it is killed.
    let _cleanup = DirGuard(dir.clone());
    let ip = own_ip();
    let listen = SocketAddr::new(ip, some_port());
    let observer_port = some_port();
    std::fs::create_dir_all(&dir).expect("state dir");
    let log = std::fs::File::create(dir.join("agent.log")).expect("agent log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskd"))
        .args(["agent", "--on-shutdown", "stop"])
        .env("TASKD_AGENT_LISTEN", listen.to_string())
        .env("TASKD_AGENT_STATE_DIR", &dir)
        .env("TASKD_AGENT_OBSERVER_PORT", observer_port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("taskd agent runs");
    let c = AgentClient::new(http(), &listen.to_string()).expect("client");
    let status = wait_for("taskd agent to answer", DEADLINE, || async {
        c.status().await.ok()
    })
    .await;
    assert_eq!(status.observer.port, observer_port);
    assert_eq!(status.observer.ip, ip, "the observer binds the agent's IP");
    let observer = c
        .start_observer("1:1", &StartObserver::default())
        .await
        .expect("start")
        .pid
        .expect("pid");
    wait_listening(&c).await;
    let mut pids: Vec<u32> = status.processes.iter().filter_map(|p| p.pid).collect();
    pids.push(observer);

    let agent_pid = child.id().expect("agent pid") as libc::pid_t;
    // SAFETY: signalling the child this test started.
    assert_eq!(unsafe { libc::kill(agent_pid, libc::SIGTERM) }, 0);
    let exit = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("agent exits in time")
        .expect("agent exit status");
    assert!(exit.success(), "{exit}");
    for pid in pids {
        assert!(!alive(pid), "pid {pid} outlived taskd agent");
    }
}

#[tokio::test]
async fn a_second_attempt_stops_the_first_and_refuses_its_later_calls() {
    let t = TestAgent::start().await;
    let c = &t.client;
    c.start_observer("40:1", &start_on(t.cfg.observer_port))
        .await
        .expect("attempt 1 starts the observer");
    wait_listening(c).await;
    // Attempt 1's stop hangs inside its performance (as an agent call of a
    // partitioned worker would), holding the agent's operation lock.
    c.set_fault(&FaultSpec::stall(Operation::ObserverStop, 1, 600_000))
        .await
        .expect("arm stall");
    let c1 = c.clone();
    let first = tokio::spawn(async move { c1.stop_observer("40:1", &graceful()).await });
    wait_for("attempt 1's stop to be in progress", DEADLINE, || async {
        c.faults().await.expect("faults").is_empty().then_some(())
    })
    .await;

    // Attempt 2 reaches the agent: attempt 1's operation is stopped at
    // once, and attempt 2 performs its own stop.
    let second = tokio::time::timeout(DEADLINE, c.stop_observer("40:2", &graceful()))
        .await
        .expect("attempt 2 does not wait out attempt 1's stall")
        .expect("attempt 2's stop");
    assert!(!second.is_running());
    let first = tokio::time::timeout(DEADLINE, first)
        .await
        .expect("attempt 1 is answered")
        .unwrap();
    assert!(
        matches!(first, Err(ClientError::Superseded { .. })),
        "attempt 1 learns it was superseded: {first:?}"
    );

    // Attempt 1's later calls are refused, replays of what it did included;
    // other subtasks and keys of another shape are not affected.
    let later = c.activate_observer("40:1").await;
    assert!(
        matches!(later, Err(ClientError::Superseded { .. })),
        "{later:?}"
    );
    let replay = c
        .start_observer("40:1", &start_on(t.cfg.observer_port))
        .await;
    assert!(
        matches!(replay, Err(ClientError::Superseded { .. })),
        "{replay:?}"
    );
    assert_eq!(replay.unwrap_err().status(), Some(410));
    assert!(
        !c.observer_status().await.unwrap().is_running(),
        "nothing of attempt 1 ran"
    );
    c.restart_pos_proxy("41:1").await.expect("another subtask");
    c.restart_pos_proxy("free-form-key")
        .await
        .expect("an unfenced key");

    // The records show which attempt was active when: attempt 1's stop
    // ended (superseded) before attempt 2's began, and nothing of attempt 1
    // started after attempt 2 reached the agent.
    let records = c.records().await.expect("records");
    let of = |key: &str| -> Vec<_> { records.iter().filter(|r| r.key == key).collect() };
    let stop1 = of("40:1")
        .into_iter()
        .find(|r| r.operation == Operation::ObserverStop)
        .expect("attempt 1's stop is recorded");
    assert_eq!(stop1.status, 410, "{stop1:?}");
    let two = of("40:2");
    assert_eq!(two.len(), 1);
    assert!(stop1.finished_at <= two[0].started_at, "{records:?}");
    assert!(
        of("40:1").iter().all(|r| r.started_at <= two[0].started_at),
        "{records:?}"
    );
    let fence = c
        .fences()
        .await
        .expect("fences")
        .into_iter()
        .find(|f| f.subtask == "40")
        .expect("subtask 40's fence");
    assert_eq!((fence.run_time, fence.refused), (2, 2));
    t.finish().await;
}

#[tokio::test]
async fn the_fence_survives_an_agent_restart() {
    let mut t = TestAgent::start().await;
    t.client.restart_pos_proxy("50:3").await.expect("attempt 3");
    t.restart(OnShutdown::Stop).await;
    let c = &t.client;
    let old = c.restart_pos_proxy("50:2").await;
    assert!(
        matches!(old, Err(ClientError::Superseded { .. })),
        "{old:?}"
    );
    let replay = c
        .restart_pos_proxy("50:3")
        .await
        .expect("attempt 3 replays");
    assert!(replay.pid.is_some());
    c.restart_pos_proxy("50:4").await.expect("attempt 4");
    let old = c.restart_pos_proxy("50:3").await;
    assert!(
        matches!(old, Err(ClientError::Superseded { .. })),
        "{old:?}"
    );
    t.finish().await;
}
