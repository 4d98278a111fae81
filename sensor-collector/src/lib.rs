//! The collector: receives each host's signed batches, verifies every batch as it arrives
//! with the agent's own verifier (`sensor_log::Verifier`, resumed from the checkpoint held for
//! the host), and keeps it where the host's root cannot reach, once, or as evidence of a fork.
//!
//! `serve` runs the transport (docs/forwarding.md, `sensor_forward::server`) over the ingest
//! rules (`ingest`) and a store (`store`, SQLite or PostgreSQL).

pub mod config;
pub mod error;
pub mod ingest;
mod metrics;
pub mod serve;
pub mod store;

pub use error::{Error, Result};
pub use ingest::{Collector, Reply};
pub use store::{PostgresStore, SqliteStore, Store};
