//! RFC 6962 (§2.1) Merkle Tree Hash over the leaf hashes of one batch.
//!
//! Pairing bottom-up and promoting a lone last node unchanged gives exactly the RFC's
//! "split at the largest power of two smaller than n" tree, without recursion.

use sha2::{Digest, Sha256};

use crate::record::Hash;

/// `MTH({}) = SHA-256("")`, the root of an empty (heartbeat) batch.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Root over leaf hashes (each already `SHA-256(0x00 || data)`).
pub fn root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return empty_root();
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        let mut write = 0;
        for read in (0..level.len()).step_by(2) {
            level[write] = match level.get(read + 1) {
                Some(right) => node_hash(&level[read], right),
                None => level[read],
            };
            write += 1;
        }
        level.truncate(write);
    }
    level[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::leaf_hash;
    use crate::hex;

    /// The Certificate Transparency reference vectors for RFC 6962 (tree sizes 0..=8).
    #[test]
    fn rfc6962_known_roots() {
        let inputs: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        let roots = [
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let leaves: Vec<Hash> = inputs.iter().map(|d| leaf_hash(d)).collect();
        for (n, expected) in roots.iter().enumerate() {
            assert_eq!(hex::encode(&root(&leaves[..n])), *expected, "tree size {n}");
        }
    }
}
