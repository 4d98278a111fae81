//! What `verify` concludes: the log is intact (with a summary of what was checked), or the
//! first failure, named by its position and one of five reasons.

use std::fmt;

use crate::anchor::AnchorTrail;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Bytes of a record or header differ from what was signed.
    Modified,
    /// A record or batch that should be there is missing.
    Deleted,
    /// A record or batch is there that no signed batch covers.
    Inserted,
    /// Records are present but not in their signed order.
    Reordered,
    /// A batch signature does not verify with the expected key.
    BadSignature,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Modified => "modified",
            Reason::Deleted => "deleted",
            Reason::Inserted => "inserted",
            Reason::Reordered => "reordered",
            Reason::BadSignature => "bad signature",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    Seq(u64),
    Batch(u64),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Seq(s) => write!(f, "seq {s}"),
            Position::Batch(b) => write!(f, "batch {b}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub position: Position,
    pub reason: Reason,
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.position, self.reason, self.detail)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub batches: u64,
    /// Epochs with at least one retained record.
    pub epochs: u64,
    pub first_seq: u64,
    pub first_batch: u64,
    pub first_wall_ns: u64,
    pub last_wall_ns: u64,
    pub key_rotations: u64,
    /// The oldest batch's key came from the source itself (its store or file) (no pinned key): trust on first use.
    pub key_from_store: bool,
    /// Set when the log starts after pruning: the first retained sequence number.
    pub pruned_before: Option<u64>,
    /// What the verified records and headers say about TPM anchoring (boxed: it is large and
    /// a `Verdict` is mostly a failure or a small summary).
    pub anchor: Box<AnchorTrail>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Intact(Summary),
    Tampered(Failure),
}
