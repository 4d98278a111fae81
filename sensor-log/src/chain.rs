//! The running hash chain over records.
//!
//! `leaf_n = SHA-256(0x00 || record_bytes_n)` and
//! `head_n = SHA-256("sensor-chain-v1" || head_{n-1} || leaf_n)`, with `head_0 = GENESIS_HEAD`.
//! The leaf hash is the RFC 6962 leaf hash, so the same value feeds the batch Merkle tree;
//! the ASCII tag separates chain hashes from leaf (0x00) and node (0x01) hashes.

use sha2::{Digest, Sha256};

use crate::record::Hash;

/// Chain head before the first record ever written.
pub const GENESIS_HEAD: Hash = [0; 32];

/// Domain tag of the chain hash (15 ASCII bytes, no terminator).
pub const CHAIN_TAG: &[u8] = b"sensor-chain-v1";

pub fn leaf_hash(record_bytes: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(record_bytes);
    h.finalize().into()
}

pub fn chain_next(previous_head: &Hash, leaf: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(CHAIN_TAG);
    h.update(previous_head);
    h.update(leaf);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn chain_hash_is_tagged_sha256_of_prev_and_leaf() {
        let leaf = leaf_hash(b"record");
        let mut input = b"sensor-chain-v1".to_vec();
        input.extend_from_slice(&GENESIS_HEAD);
        input.extend_from_slice(&leaf);
        assert_eq!(
            chain_next(&GENESIS_HEAD, &leaf),
            <Hash>::from(Sha256::digest(&input))
        );
        assert_eq!(leaf, <Hash>::from(Sha256::digest(b"\x00record")));
        assert_ne!(
            chain_next(&leaf, &GENESIS_HEAD),
            chain_next(&GENESIS_HEAD, &leaf)
        );
    }
}
