//! The tamper-evident log's format and its verifier, shared by the agent, `sensorctl` and
//! collectors: the event schema, the canonical record encoding, the hash chain, signed Merkle
//! batches with inclusion and consistency proofs, the anchoring trail, and `verify` over any
//! `BatchSource` (the agent's store, a collector's database, a file of exported batches).
//! No database and no TPM device here: plain std.
//!
//! The byte-level format is specified in `docs/log-format.md`; its test vectors are computed
//! by `vectors` and asserted to appear in the document verbatim, so the two cannot drift.

pub mod anchor;
pub mod batch;
pub mod batch_file;
pub mod chain;
pub mod codec;
pub mod error;
pub mod event;
pub mod filter;
pub mod forward;
pub mod hex;
pub mod merkle;
pub mod record;
mod rows;
pub mod source;
pub mod time;
pub mod vectors;
pub mod verdict;
pub mod verify;

pub use anchor::AnchorTrail;
pub use batch::{Anchor, BatchHeader, SealedBatch};
pub use error::{Error, Result};
pub use event::*;
pub use record::{
    AnchorBase, Body, EndReason, EpochStart, KeyRotation, Pruned, Record, RecordHeader, TpmEntry,
    TpmQuote,
};
pub use source::BatchSource;
pub use time::Timestamp;
pub use verdict::{Failure, Position, Reason, Summary, Verdict};
pub use verify::{verify, Checkpoint, Verifier};
