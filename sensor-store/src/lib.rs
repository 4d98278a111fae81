//! The agent's local log store: `log.db` (SQLite) in the state directory, the writer the
//! agent's chain stage calls, the signing keys, the query index and queries, the status file,
//! and `verify` of the store through `sensor_log::verify`. All the project's SQL for the
//! agent's log lives in this crate. Plain std: no eBPF, no tokio.

mod anchor;
pub mod block;
pub mod error;
pub mod export;
mod index;
mod index_check;
pub mod keys;
mod migrate;
pub mod query;
mod records;
pub mod status;
pub mod store;
#[cfg(feature = "tamper")]
pub mod tamper;
pub mod verify;
pub mod writer;

#[cfg(test)]
mod decode_props;

pub use error::{Error, Result};
pub use query::Filter;
pub use status::{AgentStatus, AnchorStatus, Executable, ForwardStatus};
pub use store::Store;
pub use verify::verify;
pub use writer::{Admission, LogWriter, WriterOptions};
