//! Signed batch headers and the policy that decides when a batch closes.
//!
//! Signing batches, not records, keeps Ed25519 off the per-event path; the Merkle root binds
//! every record of the batch and the chain head binds the whole history before it.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec;
use crate::error::Result;
use crate::record::{Hash, HostId};

/// Version of the batch-header layout, apart from the records' (`record::FORMAT_VERSION`):
/// record version 2 left the header's bytes as they were.
pub const BATCH_VERSION: u16 = 1;

/// Domain tag of the header digest (15 ASCII bytes).
pub const BATCH_TAG: &[u8] = b"sensor-batch-v1";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchHeader {
    pub version: u16,
    pub host_id: HostId,
    pub epoch: u64,
    /// Global and contiguous across epochs; the first batch is 1.
    pub number: u64,
    /// Sequence number of the first record (for an empty batch: the next one to be written).
    pub first_seq: u64,
    /// Records in the batch; 0 for a heartbeat.
    pub count: u64,
    /// RFC 6962 root over the records' leaf hashes.
    pub merkle_root: Hash,
    /// Digest of the previous batch header (zeros before batch 1).
    pub prev_digest: Hash,
    /// Chain head before the first record, so a verifier can start at any retained batch
    /// after retention removed older ones.
    pub prev_head: Hash,
    /// Chain head after the last record.
    pub chain_head: Hash,
    /// Which signing key signed this header.
    pub key_epoch: u64,
    pub wall_ns: u64,
    /// TPM anchor: `None` when the log is not anchored (no TPM, or the epoch's first batch,
    /// sealed before the TPM is asked). Part of the version-1 layout from the start.
    pub anchor: Option<Anchor>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// PCR extended with this header's digest.
    pub pcr_index: u32,
    /// NV (hybrid) counter value when the batch was sealed.
    pub nv_counter: u64,
    /// TPM reset and restart counts of the boot cycle the counter was read in: a header names
    /// its TPM boot cycle, so a reboot cannot pass for a continuation.
    pub reset_count: u32,
    pub restart_count: u32,
}

/// A batch as it leaves the writer, durable on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedBatch {
    pub header: BatchHeader,
    /// Canonical encoding of `header`; what the digest covers.
    pub header_bytes: Vec<u8>,
    pub digest: Hash,
    pub signature: [u8; 64],
}

/// `SHA-256("sensor-batch-v1" || header_bytes)`.
pub fn digest(header_bytes: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(BATCH_TAG);
    h.update(header_bytes);
    h.finalize().into()
}

impl BatchHeader {
    pub fn decode(bytes: &[u8]) -> Result<BatchHeader> {
        codec::decode(bytes, "batch header")
    }

    pub fn seal(self, key: &SigningKey) -> Result<SealedBatch> {
        let header_bytes = codec::encode(&self)?;
        let digest = digest(&header_bytes);
        let signature = key.sign(&digest).to_bytes();
        Ok(SealedBatch {
            header: self,
            header_bytes,
            digest,
            signature,
        })
    }
}

/// Checks an Ed25519 signature over a header digest (strict: rejects malleable encodings).
pub fn signature_valid(key: &VerifyingKey, digest: &Hash, signature: &[u8]) -> bool {
    Signature::from_slice(signature).is_ok_and(|sig| key.verify_strict(digest, &sig).is_ok())
}

/// When to close a batch: every `max_records` records or every `interval_ns`, whichever
/// comes first; an idle interval still closes an empty heartbeat batch, so a cut-off quiet
/// tail shows as missing heartbeats.
#[derive(Clone, Copy, Debug)]
pub struct BatchSealer {
    pub max_records: usize,
    pub interval_ns: u64,
    last_attempt_mono: u64,
    /// After a failed seal only the interval counts, so a full disk is retried at a steady
    /// pace instead of on every append.
    failing: bool,
}

impl BatchSealer {
    pub fn new(max_records: usize, interval_ns: u64, now_mono: u64) -> BatchSealer {
        BatchSealer {
            max_records: max_records.max(1),
            interval_ns,
            last_attempt_mono: now_mono,
            failing: false,
        }
    }

    pub fn due(&self, pending: usize, now_mono: u64) -> bool {
        let interval_over = now_mono.saturating_sub(self.last_attempt_mono) >= self.interval_ns;
        interval_over || (!self.failing && pending >= self.max_records)
    }

    /// Starts the next interval after a seal attempt.
    pub fn attempted(&mut self, now_mono: u64, succeeded: bool) {
        self.last_attempt_mono = now_mono;
        self.failing = !succeeded;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BatchHeader {
        BatchHeader {
            version: BATCH_VERSION,
            host_id: [1; 16],
            epoch: 1,
            number: 1,
            first_seq: 1,
            count: 0,
            merkle_root: crate::merkle::empty_root(),
            prev_digest: [0; 32],
            prev_head: [0; 32],
            chain_head: [0; 32],
            key_epoch: 1,
            wall_ns: 1,
            anchor: None,
        }
    }

    #[test]
    fn signature_covers_the_digest() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let sealed = header().seal(&key).expect("seals");
        assert_eq!(
            BatchHeader::decode(&sealed.header_bytes).expect("decodes"),
            sealed.header
        );
        assert!(signature_valid(
            &key.verifying_key(),
            &sealed.digest,
            &sealed.signature
        ));
        let mut other = sealed.digest;
        other[0] ^= 1;
        assert!(!signature_valid(
            &key.verifying_key(),
            &other,
            &sealed.signature
        ));
        let stranger = SigningKey::from_bytes(&[4; 32]).verifying_key();
        assert!(!signature_valid(
            &stranger,
            &sealed.digest,
            &sealed.signature
        ));
    }

    #[test]
    fn anchor_fits_the_same_version() {
        let mut h = header();
        h.anchor = Some(Anchor {
            pcr_index: 14,
            nv_counter: 9,
            reset_count: 2,
            restart_count: 1,
        });
        let bytes = codec::encode(&h).expect("encodes");
        assert_eq!(BatchHeader::decode(&bytes).expect("decodes"), h);
    }

    #[test]
    fn sealer_closes_on_count_or_interval_and_paces_retries() {
        let mut s = BatchSealer::new(4, 1000, 0);
        assert!(!s.due(3, 999));
        assert!(s.due(4, 1));
        assert!(s.due(0, 1000), "idle interval closes a heartbeat batch");
        s.attempted(1000, false);
        assert!(
            !s.due(10, 1500),
            "a failing disk is retried per interval, not per record"
        );
        assert!(s.due(10, 2000));
    }
}
