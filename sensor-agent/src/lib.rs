//! The host agent as a library; the `sensor-agent` binary is a thin CLI over it.
//!
//! Data flows through the modules in this order:
//! `probes` (load the kernel programs, keep the watched-set maps in sync) →
//! `pipeline::read` (ring buffer) → `pipeline::decode` → `pipeline::enrich`
//! (with `attribution` and `watch`) → `pipeline::output`.

mod allocator;
pub mod attribution;
pub mod commands;
pub mod config;
pub mod error;
pub mod pipeline;
pub mod probes;
pub mod watch;

pub use error::Error;
