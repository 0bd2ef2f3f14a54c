//! The host agent: its HTTP protocol, the client actions use, and the
//! reference agent server (`taskd agent`).
//!
//! - [`protocol`]: paths, the `Idempotency-Key` header, request and answer
//!   bodies (described in `docs/agent-protocol.md`).
//! - [`client`]: [`AgentClient`], one method per operation, and
//!   [`wait_until`] for polling with backoff.
//! - [`server`]: the reference agent, [`serve_agent`] and [`spawn_agent`].
//! - [`process`]: the real OS processes the reference agent runs.
//! - [`standin`]: `taskd observer-standin`, the stand-in observer.

pub mod client;
pub mod process;
pub mod protocol;
pub mod server;
pub mod standin;

pub use client::{wait_until, AgentClient, Error as ClientError};
pub use protocol::{
    AgentStatus, CallRecord, FaultSpec, ObserverStatus, Operation, ProcessState, ProcessStatus,
    StartObserver, StopObserver,
};
pub use server::{
    kill_recorded_processes, serve_agent, spawn_agent, AgentConfig, Error as ServerError,
    OnShutdown, RunningAgent,
};
