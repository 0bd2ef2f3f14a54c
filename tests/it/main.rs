//! Integration tests against a real PostgreSQL: one binary, one fresh
//! database per test (see `support`).

// Shared helpers: each test module uses its own subset.
#[allow(dead_code)]
mod support;

// engine.rs keeps imports its next tests need.
#[allow(unused_imports)]
mod engine;
