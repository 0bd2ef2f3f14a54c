//! Integration tests, one binary: the engine against a real PostgreSQL, one
//! fresh database per test (see `support`); the agent with real processes
//! on loopback addresses, no database.

// Shared helpers: each test module uses its own subset. The test app and
// the browser are named from the crate root (`crate::app::TestApp`).
#[allow(dead_code)]
mod support;
use support::{app, browser};

mod actions;
mod agent;
mod auth;
mod chaos;
mod cli_errors;
mod client;
mod concurrency;
mod console;
mod demo;
mod deploy;
mod engine;
mod engine_faults;
#[allow(dead_code)]
mod faults;
mod fleet;
mod history;
mod hostile;
mod http_api;
mod http_ops;
mod inventory;
mod logs;
mod metrics;
mod otel;
mod pg_faults;
mod pg_outage;
mod promotion;
mod readme;
mod reliability;
mod serve;
mod soak;
mod wakeups;
