//! Integration tests against a real PostgreSQL: one binary, one fresh
//! database per test (see `support`).

mod support;

mod app;
mod deploy;
mod engine;
mod http_api;
mod http_ops;
mod inventory;
mod reliability;
mod serve;
