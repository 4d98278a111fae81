//! RFC 6962 / RFC 9162 (§2.1) Merkle Tree Hash over the leaf hashes of one batch, and its
//! inclusion and consistency proofs: a collector can show one record is in a signed batch
//! without the others, and that a tree is an extension of an older one.
//!
//! Pairing bottom-up and promoting a lone last node unchanged gives exactly the RFC's
//! "split at the largest power of two smaller than n" tree, without recursion. Proofs are
//! built by the RFC's recursive definitions and checked by its iterative algorithms
//! (RFC 9162 §2.1.3.2 and §2.1.4.2), so the tests compare two independent readings.

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

/// Largest power of two strictly smaller than `n` (`n >= 2`).
fn split(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The audit path of leaf `index` in the tree over `leaves` (RFC 9162 §2.1.3.1), nearest
/// sibling first; `None` when `index` is not a leaf of the tree.
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    let (mut tree, mut index) = (leaves, index);
    // Top-down, each level adds the sibling subtree's root; reversed to leaf-first at the end.
    while tree.len() > 1 {
        let k = split(tree.len());
        if index < k {
            path.push(root(&tree[k..]));
            tree = &tree[..k];
        } else {
            path.push(root(&tree[..k]));
            tree = &tree[k..];
            index -= k;
        }
    }
    path.reverse();
    Some(path)
}

/// Whether `path` proves `leaf` is leaf `index` of the tree of `size` leaves with `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// The proof that the tree over `leaves[..old_size]` is a prefix of the tree over `leaves`
/// (RFC 9162 §2.1.4.1); `None` unless `0 < old_size <= leaves.len()`.
pub fn consistency_proof(leaves: &[Hash], old_size: usize) -> Option<Vec<Hash>> {
    if old_size == 0 || old_size > leaves.len() {
        return None;
    }
    let mut proof = Vec::new();
    let (mut tree, mut m, mut whole) = (leaves, old_size, true);
    while m != tree.len() {
        let k = split(tree.len());
        if m <= k {
            proof.push(root(&tree[k..]));
            tree = &tree[..k];
        } else {
            proof.push(root(&tree[..k]));
            tree = &tree[k..];
            m -= k;
            whole = false;
        }
    }
    if !whole {
        proof.push(root(tree));
    }
    proof.reverse();
    Some(proof)
}

/// Whether `proof` shows the tree of `new_size` leaves with `new_root` extends the tree of
/// `old_size` leaves with `old_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size == 0 || old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    let mut path = proof.iter();
    let first = if old_size.is_power_of_two() {
        *old_root
    } else {
        match path.next() {
            Some(h) => *h,
            None => return false,
        }
    };
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (first, first);
    for c in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == *old_root && sr == *new_root && s == 0
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
            assert_eq!(hex::encode(root(&leaves[..n])), *expected, "tree size {n}");
        }
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect()
    }

    /// Every leaf of every tree up to 40 leaves: the proof verifies, and changing the leaf,
    /// the index, any proof element, or dropping or adding one, makes it fail. (A size
    /// whose tree has the same shape along the path proves the same root; the size is bound
    /// by the signed header, as in RFC 9162.)
    #[test]
    fn inclusion_proofs_verify_and_reject_every_change() {
        let all = leaves(40);
        for n in 1..=all.len() {
            let tree = &all[..n];
            let r = root(tree);
            let size = n as u64;
            assert_eq!(inclusion_proof(tree, n), None);
            for i in 0..n {
                let proof = inclusion_proof(tree, i).unwrap();
                let at = i as u64;
                assert!(
                    verify_inclusion(&tree[i], at, size, &proof, &r),
                    "n={n} i={i}"
                );
                assert!(!verify_inclusion(&leaf_hash(b"x"), at, size, &proof, &r));
                assert!(!verify_inclusion(&tree[i], at + 1, size, &proof, &r) || n == 1);
                assert!(!verify_inclusion(&tree[i], size, size, &proof, &r));
                for j in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[j][0] ^= 1;
                    assert!(!verify_inclusion(&tree[i], at, size, &bad, &r));
                }
                let mut longer = proof.clone();
                longer.push(r);
                assert!(!verify_inclusion(&tree[i], at, size, &longer, &r));
                if !proof.is_empty() {
                    let shorter = &proof[..proof.len() - 1];
                    assert!(!verify_inclusion(&tree[i], at, size, shorter, &r));
                }
            }
        }
    }

    /// Every pair of sizes 1 <= m <= n <= 40: the proof verifies, and changing a root or any
    /// element, or adding one, makes it fail.
    #[test]
    fn consistency_proofs_verify_and_reject_every_change() {
        let all = leaves(40);
        for n in 1..=all.len() {
            let new_root = root(&all[..n]);
            assert_eq!(consistency_proof(&all[..n], 0), None);
            assert_eq!(consistency_proof(&all[..n], n + 1), None);
            for m in 1..=n {
                let old_root = root(&all[..m]);
                let proof = consistency_proof(&all[..n], m).unwrap();
                let (m64, n64) = (m as u64, n as u64);
                assert!(
                    verify_consistency(m64, n64, &old_root, &new_root, &proof),
                    "m={m} n={n}"
                );
                let other = leaf_hash(b"x");
                assert!(!verify_consistency(m64, n64, &other, &new_root, &proof));
                assert!(!verify_consistency(m64, n64, &old_root, &other, &proof));
                assert!(!verify_consistency(0, n64, &old_root, &new_root, &proof));
                for j in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[j][0] ^= 1;
                    assert!(!verify_consistency(m64, n64, &old_root, &new_root, &bad));
                }
                if m < n {
                    let mut longer = proof.clone();
                    longer.push(other);
                    assert!(!verify_consistency(m64, n64, &old_root, &new_root, &longer));
                }
            }
        }
    }
}
