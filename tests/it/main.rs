//! Integration tests, one binary: the engine against a real PostgreSQL, one
//! fresh database per test (see `support`); the agent with real processes
//! on loopback addresses, no database.

// Shared helpers: each test module uses its own subset.
#[allow(dead_code)]
mod support;

mod actions;
mod agent;
mod app;
mod auth;
mod browser;
mod chaos;
mod cli_errors;
mod client;
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
mod pg_faults;
mod pg_outage;
mod promotion;
mod readme;
mod reliability;
mod serve;
