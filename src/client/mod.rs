//! `taskd tasks …` and `taskd ops …`: a command-line client of the REST API
//! (URL and credentials from flags or the environment), with tables for
//! lists, a live progress display of a running task, and `--output json`
//! for scripts.

mod args;
mod render;

pub use args::{ApiArgs, OpsCommand, Output, TasksCommand};

use serde_json::Value;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{url} did not answer: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{method} {path} answered {status} {code}: {message}")]
    Api {
        method: String,
        path: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{path} answered something that is not taskd's envelope")]
    NotAnEnvelope { path: String },
    #[error("task {id} ended {status}")]
    TaskEnded { id: i64, status: String },
    #[error("cannot write the output: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A client of one taskd API.
pub struct Client {
    http: reqwest::Client,
    base: String,
    user: Option<String>,
    password: Option<String>,
}

impl Client {
    pub fn new(api: &ApiArgs) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(api.timeout_secs))
                .build()
                .unwrap_or_default(),
            base: api.url.as_str().trim_end_matches('/').to_string(),
            user: api.user.clone(),
            password: api.password.clone(),
        }
    }

    /// Sends one request; the envelope's `data` on success, else the API's
    /// own code and message.
    pub async fn call(&self, method: reqwest::Method, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(user) = &self.user {
            req = req.basic_auth(user, self.password.as_deref());
        }
        let resp = req.send().await.map_err(|e| Error::Unreachable {
            url: self.base.clone(),
            reason: e.without_url().to_string(),
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|_| Error::NotAnEnvelope {
            path: path.to_string(),
        })?;
        if status.is_success() && body["successful"] == Value::Bool(true) {
            return Ok(body.get("data").cloned().unwrap_or(Value::Null));
        }
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Err(Error::Api {
            method: method.to_string(),
            path: path.to_string(),
            status: status.as_u16(),
            code: text(&body["error"]["code"]),
            message: text(&body["error"]["message"]),
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, path).await
    }

    pub async fn post(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::POST, path).await
    }

    /// Polls the task every `every` until it is no longer RUNNING, showing
    /// its progress on `out` (redrawn in place on a terminal, a line per
    /// change elsewhere). Ok when it ends SUCCESSFUL.
    pub async fn wait(
        &self,
        id: i64,
        every: Duration,
        out: &mut dyn std::io::Write,
        terminal: bool,
    ) -> Result<Value> {
        let mut progress = render::Progress::new(terminal);
        loop {
            let task = self.get(&format!("/api/v2/tasks/instances/{id}")).await?;
            progress.show(&task, chrono::Utc::now(), out)?;
            match task["status"].as_str() {
                Some("RUNNING") | None => tokio::time::sleep(every).await,
                Some("SUCCESSFUL") => return Ok(task),
                Some(other) => {
                    return Err(Error::TaskEnded {
                        id,
                        status: other.to_string(),
                    })
                }
            }
        }
    }
}

/// Runs `taskd tasks …`.
pub async fn tasks(api: ApiArgs, command: TasksCommand) -> Result<()> {
    args::run_tasks(&Client::new(&api), api.output, command).await
}

/// Runs `taskd ops …`.
pub async fn ops(api: ApiArgs, command: OpsCommand) -> Result<()> {
    args::run_ops(&Client::new(&api), api.output, command).await
}
