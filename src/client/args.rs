//! The client's command line and what each command sends.

use super::{render, Client, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// Where the API is and who calls it; shared by `taskd tasks` and `taskd ops`.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// The API's base URL.
    #[arg(
        long,
        env = "TASKD_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: url::Url,
    /// User name for HTTP Basic authentication.
    #[arg(long, env = "TASKD_USER", global = true)]
    pub user: Option<String>,
    /// Its password (prefer the environment variable to the flag: a flag is
    /// visible to other users of the machine).
    #[arg(long, env = "TASKD_PASSWORD", hide_env_values = true, global = true)]
    pub password: Option<String>,
    /// Tables for people, or the API's `data` as JSON for scripts.
    #[arg(long, env = "TASKD_OUTPUT", value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// Seconds to wait for each answer.
    #[arg(long = "request-timeout-secs", env = "TASKD_REQUEST_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// One page of tasks, newest first.
    List {
        /// Statuses, comma-separated: RUNNING, FAILED, SUCCESSFUL.
        #[arg(long)]
        status: Option<String>,
        /// Part of the task name.
        #[arg(long)]
        name: Option<String>,
        /// MANUAL, SCHEDULED or SYS_SCHEDULED.
        #[arg(long = "type")]
        task_type: Option<String>,
        /// Target cluster id.
        #[arg(long)]
        cluster_id: Option<i64>,
        /// Target host id.
        #[arg(long)]
        host_id: Option<i64>,
        /// Exact creator name.
        #[arg(long)]
        creator: Option<String>,
        /// `key[,asc|desc]`, e.g. `createTime,desc`.
        #[arg(long)]
        sort: Option<String>,
        /// Page number, from 1.
        #[arg(long, default_value_t = 1)]
        page: i64,
        /// Page size, 1 to 2000.
        #[arg(long, default_value_t = 20)]
        size: i64,
    },
    /// A task and its subtasks.
    Show {
        /// The task id.
        id: i64,
    },
    /// The log of one subtask's run.
    Log {
        /// The task id.
        task: i64,
        /// The subtask id.
        subtask: i64,
        /// Which run (default: the latest).
        #[arg(long)]
        run_time: Option<i32>,
    },
    /// Retry a FAILED task, or with `--subtask` one failed subtask.
    Retry {
        /// The task id.
        id: i64,
        /// Retry only this subtask.
        #[arg(long)]
        subtask: Option<i64>,
        /// Follow the task until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// Roll back a FAILED task.
    Rollback {
        /// The task id.
        id: i64,
        /// Follow the task until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// Skip a FAILED subtask.
    Skip {
        /// The task id.
        task: i64,
        /// The subtask id.
        subtask: i64,
    },
    /// Cancel a RUNNING subtask.
    Cancel {
        /// The task id.
        task: i64,
        /// The subtask id.
        subtask: i64,
    },
    /// Follow a task until it ends: exit 0 when SUCCESSFUL, 1 otherwise.
    Wait {
        /// The task id.
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Restart an OBServer.
    Restart {
        #[command(flatten)]
        server: ServerTarget,
        /// Restart even when the server is not in a state that allows it.
        #[arg(long)]
        force: bool,
        /// Follow the task until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// Start a stopped OBServer.
    Start {
        #[command(flatten)]
        server: ServerTarget,
        /// Follow the task until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// Stop an OBServer.
    Stop {
        #[command(flatten)]
        server: ServerTarget,
        /// Stop even when the server is not in a state that allows it.
        #[arg(long)]
        force: bool,
        /// Follow the task until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// Restart a host's agent.
    AgentRestart {
        /// The host id.
        #[arg(long)]
        host: i64,
        /// Follow the task until it ends.
        #[arg(long)]
        wait: bool,
    },
}

/// The server an operation acts on.
#[derive(Debug, Clone, Args)]
pub struct ServerTarget {
    /// The cluster id.
    #[arg(long)]
    cluster: i64,
    /// The server id.
    #[arg(long)]
    server: i64,
}

impl ServerTarget {
    fn path(&self, op: &str) -> String {
        format!(
            "/api/v2/ob/clusters/{}/servers/{}/{op}",
            self.cluster, self.server
        )
    }
}

/// Appends `key=value` pairs that are set, URL-encoded.
fn query(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let set: Vec<(&str, &str)> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v)))
        .collect();
    if set.is_empty() {
        return path.to_string();
    }
    let encoded = serde_urlencoded::to_string(&set).unwrap_or_default();
    format!("{path}?{encoded}")
}

fn print(output: Output, value: &Value, table: impl FnOnce(&Value) -> String) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        )?,
        Output::Table => write!(out, "{}", table(value))?,
    }
    Ok(())
}

/// Prints a task an operation returned, then follows it when `wait`.
async fn task_then_wait(client: &Client, output: Output, task: Value, wait: bool) -> Result<()> {
    let id = task["id"].as_i64().unwrap_or_default();
    if !wait {
        return print(output, &task, render::task);
    }
    let terminal = output == Output::Table && std::io::stdout().is_terminal();
    let ended = if output == Output::Json {
        client.wait(id, POLL, &mut std::io::sink(), false).await
    } else {
        let mut out = std::io::stdout().lock();
        client.wait(id, POLL, &mut out, terminal).await
    };
    if output == Output::Json {
        // The final task either way, then the verdict.
        let last = client.get(&format!("/api/v2/tasks/instances/{id}")).await?;
        print(output, &last, render::task)?;
    }
    ended.map(|_| ())
}

/// How often `--wait` polls (the console's limit too: one request a second
/// at most would be the ceiling; half a second keeps steps' times fresh).
const POLL: Duration = Duration::from_millis(500);

pub(super) async fn run_tasks(
    client: &Client,
    output: Output,
    command: TasksCommand,
) -> Result<()> {
    const T: &str = "/api/v2/tasks/instances";
    match command {
        TasksCommand::List {
            status,
            name,
            task_type,
            cluster_id,
            host_id,
            creator,
            sort,
            page,
            size,
        } => {
            let path = query(
                T,
                &[
                    ("status", status),
                    ("name", name),
                    ("type", task_type),
                    ("clusterId", cluster_id.map(|v| v.to_string())),
                    ("hostId", host_id.map(|v| v.to_string())),
                    ("creator", creator),
                    ("sort", sort),
                    ("page", Some(page.to_string())),
                    ("size", Some(size.to_string())),
                ],
            );
            let data = client.get(&path).await?;
            print(output, &data, render::task_list)
        }
        TasksCommand::Show { id } => {
            let task = client.get(&format!("{T}/{id}")).await?;
            print(output, &task, render::task)
        }
        TasksCommand::Log {
            task,
            subtask,
            run_time,
        } => {
            let path = query(
                &format!("{T}/{task}/subtasks/{subtask}/log"),
                &[("runTime", run_time.map(|v| v.to_string()))],
            );
            let data = client.get(&path).await?;
            print(output, &data, |d| {
                let log = d["log"].as_str().unwrap_or_default();
                if log.is_empty() || log.ends_with('\n') {
                    log.to_string()
                } else {
                    format!("{log}\n")
                }
            })
        }
        TasksCommand::Retry { id, subtask, wait } => match subtask {
            Some(s) => {
                let data = client.post(&format!("{T}/{id}/subtasks/{s}/retry")).await?;
                print(output, &data, |_| {
                    format!("subtask {s} of task {id} retried\n")
                })?;
                if wait {
                    let task = client.get(&format!("{T}/{id}")).await?;
                    task_then_wait(client, output, task, true).await?;
                }
                Ok(())
            }
            None => {
                let task = client.post(&format!("{T}/{id}/retry")).await?;
                task_then_wait(client, output, task, wait).await
            }
        },
        TasksCommand::Rollback { id, wait } => {
            let task = client.post(&format!("{T}/{id}/rollback")).await?;
            task_then_wait(client, output, task, wait).await
        }
        TasksCommand::Skip { task, subtask } => {
            let data = client
                .post(&format!("{T}/{task}/subtasks/{subtask}/skip"))
                .await?;
            print(output, &data, |_| {
                format!("subtask {subtask} of task {task} skipped\n")
            })
        }
        TasksCommand::Cancel { task, subtask } => {
            let data = client
                .post(&format!("{T}/{task}/subtasks/{subtask}/cancel"))
                .await?;
            print(output, &data, |_| {
                format!("cancel of subtask {subtask} of task {task} requested\n")
            })
        }
        TasksCommand::Wait { id } => {
            let task = client.get(&format!("{T}/{id}")).await?;
            task_then_wait(client, output, task, true).await
        }
    }
}

pub(super) async fn run_ops(client: &Client, output: Output, command: OpsCommand) -> Result<()> {
    let force = |f: bool| [("force", Some(f.to_string()))];
    let (path, wait) = match command {
        OpsCommand::Restart {
            server,
            force: f,
            wait,
        } => (query(&server.path("restart"), &force(f)), wait),
        OpsCommand::Start { server, wait } => (server.path("start"), wait),
        OpsCommand::Stop {
            server,
            force: f,
            wait,
        } => (query(&server.path("stop"), &force(f)), wait),
        OpsCommand::AgentRestart { host, wait } => {
            (format!("/compute/hosts/{host}/agent/restart"), wait)
        }
    };
    let task = client.post(&path).await?;
    task_then_wait(client, output, task, wait).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_filters_given_go_into_the_query() {
        assert_eq!(query("/t", &[("a", None)]), "/t");
        assert_eq!(
            query(
                "/t",
                &[
                    ("name", Some("Stop x&y".into())),
                    ("page", None),
                    ("size", Some("5".into()))
                ]
            ),
            "/t?name=Stop+x%26y&size=5"
        );
    }
}
