//! Fault injection for tests: a TCP proxy the test drives between taskd and
//! PostgreSQL (`proxy`), and a private PostgreSQL cluster the test starts,
//! stops and restarts (`pgcluster`). `tests` checks each fault against a
//! real server.

pub mod pgcluster;
pub mod proxy;
#[cfg(test)]
mod tests;
