//! The host agent: its HTTP protocol, the client actions use, and the
//! reference agent server (`taskd agent`).
