//! The event schema shared by the agent, `sensorctl` and collectors, and the tamper-evident
//! local log: canonical record encoding, hash chain, signed Merkle batches, the SQLite store,
//! the writer the agent calls, the verifier and the query side. Plain std: no eBPF, no tokio.
//!
//! The byte-level format is specified in `docs/log-format.md`; the test vectors there are
//! asserted by `format::tests::documented_vectors` so the document and the code cannot drift.

pub mod anchor;
pub mod batch;
pub mod chain;
pub mod codec;
pub mod error;
pub mod event;
pub mod hex;
mod index;
mod index_check;
pub mod keys;
pub mod merkle;
pub mod query;
pub mod record;
pub mod status;
pub mod store;
pub mod time;
pub mod verify;
pub mod writer;

#[cfg(test)]
mod decode_props;
#[cfg(test)]
mod format;

pub use anchor::AnchorTrail;
pub use batch::{Anchor, BatchHeader, SealedBatch};
pub use error::{Error, Result};
pub use event::*;
pub use query::Filter;
pub use record::{
    AnchorBase, Body, EndReason, EpochStart, KeyRotation, Pruned, Record, RecordHeader, TpmEntry,
    TpmQuote,
};
pub use status::{AgentStatus, AnchorStatus, Executable};
pub use store::Store;
pub use time::Timestamp;
pub use verify::{verify, Failure, Position, Reason, Summary, Verdict};
pub use writer::{Admission, LogWriter, WriterOptions};
