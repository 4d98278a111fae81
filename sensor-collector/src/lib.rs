//! The collector: receives each host's signed batches, verifies every batch as it arrives
//! with the agent's own verifier (`sensor_log::Verifier`, resumed from the checkpoint held for
//! the host), and keeps it where the host's root cannot reach, once, or as evidence of a fork.
//!
//! This crate holds the ingest rules and the SQLite store; the transport
//! (docs/forwarding.md) is built on them next.

pub mod error;
pub mod ingest;
pub mod store;

pub use error::{Error, Result};
pub use ingest::{Collector, Reply};
pub use store::{PostgresStore, SqliteStore, Store};
