//! taskd: a persistent task service for OceanBase operations.
//!
//! A REST request (restart, start or stop an OBServer, restart a host's agent)
//! becomes a task instance: a DAG of subtasks stored in PostgreSQL. Worker
//! loops in any number of processes claim READY subtasks with row locks, run
//! their actions outside any transaction and finish each run in one short,
//! fenced transaction. A sweeper recovers the work of dead workers.
//!
//! Module map:
//! - [`app`]: the composition root: how a process is assembled and stopped.
//! - `bench`: `taskd bench`, throughput and latency figures.
//! - [`cli`]: subcommands and what each runs.
//! - [`client`]: `taskd tasks` and `taskd ops`, a client of the REST API.
//! - [`config`]: settings from flags and environment.
//! - `demo`: `taskd demo`, agents and a demo inventory in one command.
//! - [`db`]: connection pool and advisory-locked migrations.
//! - [`metrics`]: Prometheus metrics of the process.
//! - [`pgcluster`]: a private PostgreSQL cluster from the installed server
//!   binaries (the demo's when none runs, the fault tests').
//! - [`report`]: what a failed command prints, one line per error.
//! - [`model`]: ids, statuses, the context, OCP's context keys and the state
//!   machine (pure).
//! - [`dag`]: DAG specs, validation, parallel split, the four templates and
//!   the multi-target rollouts built from them (pure).
//! - [`store`]: all SQL, one file per aggregate (and the bench's figures);
//!   callers own transactions.
//! - [`engine`]: submit, worker loop, finisher, sweeper, user actions.
//! - [`operations`]: OCP's operations and taskd's multi-target ones (cluster,
//!   zone, agent batch): guards, contexts, held keys, idempotent replay.
//! - [`actions`]: the action registry and its actions.
//! - [`agent`]: the host agent protocol, its client and the reference agent.
//! - [`auth`]: users, roles and permissions, HTTP Basic authentication.
//! - [`http`]: the REST API (operations, task management, inventory): it
//!   parses, authorises and answers; OCP's wire types, envelope, errors,
//!   the OpenAPI document (one declaration per route) and health probes;
//!   and the operator console in the browser (`http::console`: its
//!   sessions, views and assets), served by the same router.
//!
//! Where to look: a process is assembled in [`app`]; an OCP rule lives in
//! [`operations`]; a run is finished in `engine::finish`.

pub mod actions;
pub mod agent;
pub mod app;
pub mod auth;
mod bench;
pub mod cli;
pub mod client;
pub mod config;
pub mod dag;
pub mod db;
mod demo;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod model;
pub mod operations;
pub mod pgcluster;
pub mod report;
pub mod store;
pub mod telemetry;
