//! Integration tests against a real PostgreSQL: one binary, one fresh
//! database per test (see `support`).

mod support;

mod deploy;
mod engine;
mod reliability;
