//! Actions: what a subtask does, keyed by className in a registry. An action
//! has `execute`, `rollback` and an optional `cancel` hook; it touches the
//! world only through the inventory in PostgreSQL and the host agents.

pub mod ocp;
mod scope;
mod status;
mod target;
pub mod testing;

use crate::model::{Context, SubtaskOperation};
use async_trait::async_trait;
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Why an action run did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// The run failed; the retry rules decide what comes next.
    #[error("{0}")]
    Failed(String),
    /// The run stopped because it was cancelled.
    #[error("subtask canceled")]
    Cancelled,
}

pub type ActionResult = std::result::Result<(), ActionError>;

impl ActionError {
    pub fn failed(msg: impl std::fmt::Display) -> Self {
        ActionError::Failed(msg.to_string())
    }
}

/// What the world looks like to actions: shared by every run of a worker.
#[derive(Clone)]
pub struct Deps {
    pub pool: PgPool,
    /// No overall timeout of its own: each agent call's deadline is the
    /// run's (see [`Run::deadline`]), at most `agent_call_cap`.
    pub http: reqwest::Client,
    /// The longest a single agent call may take, whatever the run's time.
    pub agent_call_cap: std::time::Duration,
}

/// Default [`Deps::agent_call_cap`]: above every template step's timeout
/// that makes agent calls, so a step's own timeout decides.
pub const AGENT_CALL_CAP: std::time::Duration = std::time::Duration::from_secs(600);

impl Deps {
    pub fn new(pool: PgPool) -> Self {
        Deps {
            pool,
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(3))
                .build()
                .unwrap_or_default(),
            agent_call_cap: AGENT_CALL_CAP,
        }
    }
}

/// Everything one run of one subtask knows.
pub struct Run {
    pub task_id: i64,
    pub subtask_id: i64,
    pub run_time: i32,
    pub operation: SubtaskOperation,
    pub name: String,
    pub trace_id: String,
    pub parallel_idx: i32,
    /// How long the run may take before the engine stops it.
    pub timeout: std::time::Duration,
    /// When the engine stops the run (its start plus `timeout`): agent
    /// calls give up no earlier, so the step's timeout is what is reported.
    pub deadline: tokio::time::Instant,
    /// Parameters given after `?` in the className.
    pub params: BTreeMap<String, String>,
    /// The input context; keys the action sets here flow downstream.
    pub context: Context,
    /// Fires when the run must stop (cancel, timeout, shutdown, lost lease).
    pub cancel: CancellationToken,
    pub deps: Deps,
}

impl Run {
    /// Appends a line to this run's log (and to the process log).
    pub async fn log(&self, line: impl AsRef<str>) {
        let line = line.as_ref();
        tracing::info!(log = line, "subtask log");
        // Retried after any connection fault: a line is never lost to a
        // connection the pool replaces; after a commit whose reply was lost
        // it may appear twice.
        let append =
            || crate::store::log::append(&self.deps.pool, self.subtask_id, self.run_time, line);
        if let Err(e) = crate::db::retry(crate::db::Retry::Idempotent, "log line", append).await {
            tracing::warn!(error = %e, "could not write a subtask log line");
        }
    }

    /// Runs an inventory read, or a write a repeat leaves as it is (a
    /// status set to a value: every write actions make), retrying it on a
    /// fresh connection after a connection fault (`db::retry`), so a
    /// terminated backend costs the run a moment, not an attempt.
    pub async fn inventory<T, F, Fut>(&self, op: F) -> crate::store::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = crate::store::Result<T>>,
    {
        crate::db::retry(crate::db::Retry::Idempotent, "inventory", op).await
    }

    /// The idempotency key of this run, sent with every agent call.
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}", self.subtask_id, self.run_time)
    }

    /// A required string of the context.
    pub fn require(&self, key: &str) -> Result<String, ActionError> {
        self.context
            .get(key)
            .map(str::to_string)
            .ok_or_else(|| ActionError::failed(format!("context has no {key:?}")))
    }

    /// Sleeps, or returns Cancelled when the run is cancelled first.
    pub async fn sleep(&self, d: std::time::Duration) -> ActionResult {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.cancel.cancelled() => Err(ActionError::Cancelled),
        }
    }
}

#[async_trait]
pub trait Action: Send + Sync + 'static {
    async fn execute(&self, run: &mut Run) -> ActionResult;

    /// Undoes `execute`; the default has nothing to undo.
    async fn rollback(&self, run: &mut Run) -> ActionResult {
        run.log("nothing to roll back").await;
        Ok(())
    }

    /// Called after a run was stopped by cancel or timeout, to clean up.
    async fn cancel(&self, _run: &Run) {}

    /// True when the host agent fences every effect of this action by the
    /// run's `{subtask_id}:{run_time}` (a newer attempt reaching the agent
    /// stops this one and refuses its later calls). Such a run keeps going
    /// while its worker cannot reach PostgreSQL; any other run is handed
    /// back before the worker's lease could pass.
    fn fenced_by_agent(&self) -> bool {
        false
    }
}

/// Parameters given after `?` in a className.
pub type Params = BTreeMap<String, String>;

/// Maps classNames to actions.
#[derive(Clone, Default)]
pub struct Registry {
    actions: HashMap<String, Arc<dyn Action>>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// The registry every process uses: the test actions and the template
    /// actions.
    pub fn standard() -> Self {
        let mut r = Registry::new();
        testing::register(&mut r);
        ocp::register(&mut r);
        r
    }

    pub fn register(&mut self, class_name: &str, action: impl Action) {
        self.actions
            .insert(class_name.to_string(), Arc::new(action));
    }

    /// Every registered className (without parameters).
    pub fn class_names(&self) -> impl Iterator<Item = &str> {
        self.actions.keys().map(String::as_str)
    }

    pub fn contains(&self, class_name: &str) -> bool {
        self.actions.contains_key(split_class(class_name).0)
    }

    /// The action of a className and the parameters after its `?`.
    pub fn resolve(&self, class_name: &str) -> Result<(Arc<dyn Action>, Params), ActionError> {
        let (name, params) = split_class(class_name);
        let action = self.actions.get(name).cloned().ok_or_else(|| {
            ActionError::failed(format!("no action is registered for className {name:?}"))
        })?;
        Ok((action, params))
    }
}

/// `name?k=v&k2=v2` → (name, {k: v, k2: v2}).
fn split_class(class_name: &str) -> (&str, BTreeMap<String, String>) {
    match class_name.split_once('?') {
        None => (class_name, BTreeMap::new()),
        Some((name, query)) => {
            let params = query
                .split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (kv.to_string(), String::new()),
                })
                .collect();
            (name, params)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_params_parse() {
        let (n, p) = split_class("test.fail?times=2&msg=boom");
        assert_eq!(n, "test.fail");
        assert_eq!(p["times"], "2");
        assert_eq!(p["msg"], "boom");
        assert_eq!(split_class("x").1.len(), 0);
    }

    #[test]
    fn unknown_class_is_an_error_not_a_panic() {
        let r = Registry::standard();
        assert!(r.resolve("nope").is_err());
        assert!(r.resolve("test.noop").is_ok());
        assert!(r.contains("test.sleep?ms=5"));
    }
}
