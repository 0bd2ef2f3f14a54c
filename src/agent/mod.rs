//! The host agent: its HTTP protocol, the client actions use, and the
//! reference agent server (`taskd agent`).
//!
//! - [`protocol`]: paths, the `Idempotency-Key` header, request and answer
//!   bodies (described in `docs/agent-protocol.md`).
//! - [`client`]: [`AgentClient`], one method per operation, and
//!   [`wait_until`] for polling with backoff.

pub mod client;
pub mod protocol;

pub use client::{wait_until, AgentClient, Error as ClientError};
pub use protocol::{
    AgentStatus, CallRecord, FaultSpec, ObserverStatus, Operation, ProcessState, ProcessStatus,
    StartObserver, StopObserver,
};
