//! Integration tests, one binary: the engine against a real PostgreSQL, one
//! fresh database per test (see `support`); the agent with real processes
//! on loopback addresses, no database.

// Shared helpers: each test module uses its own subset.
#[allow(dead_code)]
mod support;

// engine.rs keeps imports its next tests need.
#[allow(unused_imports)]
mod engine;

mod agent;
