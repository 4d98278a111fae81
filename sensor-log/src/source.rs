//! What the verifier reads a log from. A source yields the signed bytes in order: batches
//! (header bytes and signature) by number and records by sequence number, as two streams,
//! because a store may keep them apart (the agent's SQLite tables) and a damaged one may
//! hold a record no batch covers. The verifier (`verify`) decides everything from the bytes;
//! a source that keeps copies beside them (row keys, leaf hashes, query columns) hands them
//! over or checks them in `batch_verified`, so an edited copy is found too.

use ed25519_dalek::VerifyingKey;

use crate::batch::BatchHeader;
use crate::verdict::Failure;

/// A batch as a source holds it.
#[derive(Clone, Debug, Default)]
pub struct SourceBatch {
    /// The number the source files the batch under (a row key), when it keeps one apart from
    /// the signed header; `None` numbers it by its header.
    pub number: Option<u64>,
    /// The encoded `BatchHeader`, the bytes that were signed.
    pub header: Vec<u8>,
    /// The Ed25519 signature over the header's digest.
    pub signature: Vec<u8>,
}

/// A record as a source holds it. Reused between reads: a source overwrites every field.
#[derive(Clone, Debug, Default)]
pub struct SourceRecord {
    /// The source's own number for the record (a row key), when it keeps one: tells a
    /// missing record from renumbered ones.
    pub seq: Option<u64>,
    /// The leaf hash the source keeps beside the bytes, when it keeps one: pins a modified
    /// record to its position instead of to its batch.
    pub leaf: Option<Vec<u8>>,
    /// The encoded `Record`.
    pub bytes: Vec<u8>,
}

/// What the verifier established of one batch, for a source to compare with its copies.
#[derive(Debug)]
pub struct VerifiedBatch<'a> {
    pub header: &'a BatchHeader,
    /// Sum of the encoded lengths of the batch's records.
    pub record_bytes: u64,
    /// Smallest and largest record `wall_ns`; a heartbeat batch's (no records) is its own
    /// `wall_ns`.
    pub min_wall: u64,
    pub max_wall: u64,
}

pub trait BatchSource {
    /// Why the source could not be read (I/O, a database), as opposed to tampering.
    type Error;

    /// Fills `batch` with the next batch in number order; `false` after the last.
    fn next_batch(&mut self, batch: &mut SourceBatch) -> Result<bool, Self::Error>;

    /// Fills `record` with the next record in sequence order; `false` after the last.
    fn next_record(&mut self, record: &mut SourceRecord) -> Result<bool, Self::Error>;

    /// The public key the source holds for `key_epoch`, used for the oldest batch when no
    /// key is pinned (trust on first use); later keys come from signed `KeyRotation`s.
    fn public_key(&mut self, key_epoch: u64) -> Result<Option<VerifyingKey>, Self::Error>;

    /// A batch whose header verified; its records follow.
    fn batch_started(&mut self, _header: &BatchHeader) {}

    /// A record whose bytes verified against its leaf and position.
    fn record_verified(&mut self, _seq: u64, _bytes: &[u8]) {}

    /// The batch and its records verified; a failure returned here is the verdict.
    fn batch_verified(
        &mut self,
        _batch: &VerifiedBatch<'_>,
    ) -> Result<Option<Failure>, Self::Error> {
        Ok(None)
    }
}
