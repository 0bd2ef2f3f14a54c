//! The agent client actions use: one async method per protocol operation
//! (mutating ones take the idempotency key), errors that tell an agent that
//! cannot be reached from one that refused, and [`wait_until`] for polling a
//! status with exponential backoff.

use super::protocol::{
    paths, AgentStatus, CallRecord, ErrorBody, FaultSpec, FaultTable, NoParams, ObserverStatus,
    Operation, ProcessList, ProcessStatus, Records, StartObserver, StopObserver,
    IDEMPOTENCY_KEY_HEADER,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid agent URL {url:?}: {message}")]
    BadUrl { url: String, message: String },
    /// Connection refused or reset, DNS failure, timeout: the call may or
    /// may not have been performed; repeat it with the same key.
    #[error("agent unreachable at {url}: {message}")]
    Unreachable { url: String, message: String },
    /// The agent answered with an error status.
    #[error("agent refused: {status} {message}")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    /// The agent answered 2xx with a body that is not the expected JSON.
    #[error("agent at {url} sent an unexpected answer ({status}): {message}")]
    BadResponse {
        url: String,
        status: u16,
        message: String,
    },
    #[error("gave up after {waited_ms} ms waiting for {what}; last seen: {last}")]
    Deadline {
        what: String,
        waited_ms: u64,
        last: String,
    },
    #[error("cancelled while waiting for {what}")]
    Cancelled { what: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the agent could not be reached (as opposed to refusing).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }

    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Refused { status, .. } | Error::BadResponse { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether a later call may succeed: unreachable, or a 5xx refusal.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            Error::Refused { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// A client of one host's agent. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    base: String,
}

/// The message of a transport error, without the URL reqwest puts first,
/// with its causes ("... : tcp connect error: Connection refused").
fn transport_message(e: reqwest::Error) -> String {
    let timeout = e.is_timeout();
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let part = s.to_string();
        if !msg.contains(&part) {
            msg.push_str(": ");
            msg.push_str(&part);
        }
        source = s.source();
    }
    if timeout && !msg.contains("timed out") {
        msg.push_str(" (timed out)");
    }
    msg
}

impl AgentClient {
    /// A client of the agent at `base_url` (`http://host:port`; the scheme
    /// may be left out).
    pub fn new(http: reqwest::Client, base_url: &str) -> Result<AgentClient> {
        let trimmed = base_url.trim();
        let with_scheme = if trimmed.contains("://") {
            trimmed.to_string()
        } else {
            format!("http://{trimmed}")
        };
        let base = with_scheme.trim_end_matches('/').to_string();
        let url = reqwest::Url::parse(&with_scheme).map_err(|e| Error::BadUrl {
            url: base_url.to_string(),
            message: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(Error::BadUrl {
                url: base_url.to_string(),
                message: "expected http://host:port".to_string(),
            });
        }
        Ok(AgentClient { http, base })
    }

    /// For URLs known to be well formed (`http://ip:port`).
    pub(crate) fn from_parts(http: reqwest::Client, base: String) -> AgentClient {
        AgentClient { http, base }
    }

    /// The agent's base URL, for messages.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /api/v1/status`.
    pub async fn status(&self) -> Result<AgentStatus> {
        self.get(paths::STATUS).await
    }

    /// `GET /api/v1/observer`.
    pub async fn observer_status(&self) -> Result<ObserverStatus> {
        self.get(paths::OBSERVER).await
    }

    /// Starts the observer process (a no-op if it runs on that port).
    pub async fn start_observer(&self, key: &str, req: &StartObserver) -> Result<ObserverStatus> {
        self.mutate(Operation::ObserverStart, key, req).await
    }

    /// Stops the observer process: SIGTERM then SIGKILL after the timeout,
    /// or SIGKILL at once with `force`. A no-op if it is not running.
    pub async fn stop_observer(&self, key: &str, req: &StopObserver) -> Result<ObserverStatus> {
        self.mutate(Operation::ObserverStop, key, req).await
    }

    /// Sets the observer's server flag (`ALTER SYSTEM START SERVER`); the
    /// process must run and answer on its port.
    pub async fn activate_observer(&self, key: &str) -> Result<ObserverStatus> {
        self.mutate(Operation::ObserverActivate, key, &NoParams {})
            .await
    }

    /// Clears the observer's server flag (`ALTER SYSTEM STOP SERVER`).
    pub async fn deactivate_observer(&self, key: &str) -> Result<ObserverStatus> {
        self.mutate(Operation::ObserverDeactivate, key, &NoParams {})
            .await
    }

    /// Restarts the pos proxy process (its pid changes).
    pub async fn restart_pos_proxy(&self, key: &str) -> Result<ProcessStatus> {
        self.mutate(Operation::PosProxyRestart, key, &NoParams {})
            .await
    }

    /// Stops all the agent's own processes.
    pub async fn stop_all(&self, key: &str) -> Result<Vec<ProcessStatus>> {
        let list: ProcessList = self
            .mutate(Operation::AgentStopAll, key, &NoParams {})
            .await?;
        Ok(list.processes)
    }

    /// Starts those of the agent's own processes that are not running.
    pub async fn start_all(&self, key: &str) -> Result<Vec<ProcessStatus>> {
        let list: ProcessList = self
            .mutate(Operation::AgentStartAll, key, &NoParams {})
            .await?;
        Ok(list.processes)
    }

    /// Arms a fault (replacing the operation's earlier one); returns the
    /// faults now armed.
    pub async fn set_fault(&self, fault: &FaultSpec) -> Result<Vec<FaultSpec>> {
        let req = self.http.post(self.url(paths::FAULTS)).json(fault);
        let table: FaultTable = self.send(req).await?;
        Ok(table.faults)
    }

    /// The faults still armed.
    pub async fn faults(&self) -> Result<Vec<FaultSpec>> {
        let table: FaultTable = self.get(paths::FAULTS).await?;
        Ok(table.faults)
    }

    /// Disarms every fault.
    pub async fn clear_faults(&self) -> Result<()> {
        let req = self.http.delete(self.url(paths::FAULTS));
        let _: FaultTable = self.send(req).await?;
        Ok(())
    }

    /// Every performed call the agent remembers, oldest first.
    pub async fn records(&self) -> Result<Vec<CallRecord>> {
        let records: Records = self.get(paths::RECORDS).await?;
        Ok(records.records)
    }

    /// Polls the observer's status until `pred` holds, `cancel` fires or
    /// `deadline` passes (see [`wait_until`]).
    pub async fn wait_observer(
        &self,
        what: &str,
        pred: impl FnMut(&ObserverStatus) -> bool,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<ObserverStatus> {
        let what = format!("{what} at {}", self.base);
        wait_until(&what, || self.observer_status(), pred, deadline, cancel).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.get(self.url(path))).await
    }

    async fn mutate<B: Serialize, T: DeserializeOwned>(
        &self,
        op: Operation,
        key: &str,
        body: &B,
    ) -> Result<T> {
        let req = self
            .http
            .post(self.url(op.path()))
            .header(IDEMPOTENCY_KEY_HEADER, key)
            .json(body);
        self.send(req).await
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| self.transport(e))?;
        if !status.is_success() {
            let message = match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(b) => b.error,
                Err(_) => String::from_utf8_lossy(&body).chars().take(500).collect(),
            };
            return Err(Error::Refused {
                url: self.base.clone(),
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|e| Error::BadResponse {
            url: self.base.clone(),
            status: status.as_u16(),
            message: e.to_string(),
        })
    }

    fn transport(&self, e: reqwest::Error) -> Error {
        if e.is_builder() {
            return Error::BadUrl {
                url: self.base.clone(),
                message: transport_message(e),
            };
        }
        Error::Unreachable {
            url: self.base.clone(),
            message: transport_message(e),
        }
    }
}

/// Polls with `poll` until `pred` holds for its answer, then returns that
/// answer. Waits 50 ms after the first poll, doubling up to 1 s between
/// polls. Unreachable agents and 5xx answers are waited out; other errors
/// end the wait at once. Ends with [`Error::Cancelled`] when `cancel` fires
/// and [`Error::Deadline`] (naming `what` and the last answer) once
/// `deadline` has passed.
pub async fn wait_until<T, F, Fut, P>(
    what: &str,
    mut poll: F,
    mut pred: P,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<T>
where
    T: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
    P: FnMut(&T) -> bool,
{
    const FIRST: Duration = Duration::from_millis(50);
    const CAP: Duration = Duration::from_secs(1);
    let start = Instant::now();
    let cancelled = || Error::Cancelled {
        what: what.to_string(),
    };
    let mut pause = FIRST;
    loop {
        if cancel.is_cancelled() {
            return Err(cancelled());
        }
        let answer = tokio::select! {
            a = poll() => a,
            _ = cancel.cancelled() => return Err(cancelled()),
        };
        let last = match answer {
            Ok(v) if pred(&v) => return Ok(v),
            Ok(v) => format!("{v:?}"),
            Err(e) if e.is_transient() => e.to_string(),
            Err(e) => return Err(e),
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Deadline {
                what: what.to_string(),
                waited_ms: u64::try_from(now.duration_since(start).as_millis()).unwrap_or(u64::MAX),
                last,
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(pause.min(deadline - now)) => {}
            _ = cancel.cancelled() => return Err(cancelled()),
        }
        pause = (pause * 2).min(CAP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn waits_until_the_predicate_holds() {
        let n = AtomicU32::new(0);
        let cancel = CancellationToken::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let got = wait_until(
            "three polls",
            || async { Ok(n.fetch_add(1, Ordering::SeqCst) + 1) },
            |v| *v >= 3,
            deadline,
            &cancel,
        )
        .await;
        assert_eq!(got.ok(), Some(3));
    }

    #[tokio::test]
    async fn transient_errors_are_waited_out_and_others_are_not() {
        let n = AtomicU32::new(0);
        let cancel = CancellationToken::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let got = wait_until(
            "recovery",
            || async {
                if n.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(Error::Unreachable {
                        url: "http://x".into(),
                        message: "refused".into(),
                    })
                } else {
                    Ok(7)
                }
            },
            |_| true,
            deadline,
            &cancel,
        )
        .await;
        assert_eq!(got.ok(), Some(7));
        let bad = wait_until(
            "a 400",
            || async {
                Err::<u32, _>(Error::Refused {
                    url: "http://x".into(),
                    status: 400,
                    message: "bad".into(),
                })
            },
            |_| true,
            deadline,
            &cancel,
        )
        .await;
        assert!(matches!(bad, Err(Error::Refused { status: 400, .. })));
    }

    #[tokio::test]
    async fn a_passed_deadline_names_what_and_the_last_answer() {
        let cancel = CancellationToken::new();
        let deadline = Instant::now() + Duration::from_millis(120);
        let got = wait_until(
            "the moon",
            || async { Ok(41) },
            |v| *v == 42,
            deadline,
            &cancel,
        )
        .await;
        match got {
            Err(e @ Error::Deadline { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("the moon") && msg.contains("41"), "{msg}");
            }
            other => panic!("expected a deadline error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn cancellation_ends_the_wait() {
        let cancel = CancellationToken::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let trip = cancel.clone();
        let got = wait_until(
            "never",
            || {
                trip.cancel();
                async { Ok(0) }
            },
            |_| false,
            deadline,
            &cancel,
        )
        .await;
        assert!(matches!(got, Err(Error::Cancelled { .. })));
    }

    #[test]
    fn urls_are_checked_and_normalised() {
        let http = reqwest::Client::new();
        let c = AgentClient::new(http.clone(), "127.0.0.1:62888/").expect("no scheme");
        assert_eq!(c.base_url(), "http://127.0.0.1:62888");
        assert!(AgentClient::new(http.clone(), "ftp://x").is_err());
        assert!(AgentClient::new(http, "http://").is_err());
    }
}
