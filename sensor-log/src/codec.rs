//! The canonical encoding of every signed structure (records, batch headers): the only module
//! that touches the serialization crate, so that the test vectors of docs/log-format.md prove
//! the bytes and replacing the crate changes this file alone.
//!
//! bincode 2 through serde, in one fixed configuration: little endian, fixed-width integers,
//! lengths as `u64`, and a limit of `MAX_ENCODED_BYTES` that the decoder checks against every
//! claimed length before it allocates. bincode is unmaintained (RUSTSEC-2025-0141) and frozen,
//! which is why the workspace pins it to `=2.0.1`: its bytes cannot drift under us.

use bincode::config::{Configuration, Fixint, Limit, LittleEndian};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// Largest encoded record or header accepted, in both directions. Decoding stops before
/// allocating past it, so a corrupt length prefix in the store cannot exhaust memory.
pub const MAX_ENCODED_BYTES: usize = 1 << 20;

/// Why a value could not be encoded (a bug or a value over the limit, never input).
pub type EncodeError = bincode::error::EncodeError;

const CONFIG: Configuration<LittleEndian, Fixint, Limit<MAX_ENCODED_BYTES>> =
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<MAX_ENCODED_BYTES>();

/// Canonical bytes of any log structure.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    encode_into(value, &mut bytes)?;
    Ok(bytes)
}

/// Appends the encoding of `value` to `out` and returns its length; on error `out` is as it
/// was. (The writer encodes straight into its buffer of block entries.)
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<usize> {
    let start = out.len();
    let len = match bincode::serde::encode_into_std_write(value, out, CONFIG) {
        Ok(len) if len <= MAX_ENCODED_BYTES => return Ok(len),
        Ok(len) => Error::malformed(
            "record",
            format!("{len} bytes exceeds the {MAX_ENCODED_BYTES}-byte limit"),
        ),
        Err(e) => e.into(),
    };
    out.truncate(start);
    Err(len)
}

/// Decodes a prefix of `bytes`, returning the value and how many bytes it used.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<(T, usize)> {
    bincode::serde::decode_from_slice(bytes, CONFIG).map_err(|e| Error::malformed(what, e))
}

/// Decodes exactly `bytes`: trailing bytes are refused, as they would not be canonical.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    let (value, used) = decode_prefix(bytes, what)?;
    if used != bytes.len() {
        return Err(Error::malformed(
            what,
            format!("{} trailing bytes", bytes.len() - used),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_bytes_and_oversized_lengths_are_refused() {
        let bytes = encode(&("ab".to_string(), 7u32)).expect("encodes");
        assert_eq!(
            decode::<(String, u32)>(&bytes, "pair").expect("decodes"),
            ("ab".to_string(), 7)
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<(String, u32)>(&longer, "pair").is_err());
        // A string claiming 2^40 bytes: refused by the limit, not by running out of memory.
        let mut huge = bytes;
        huge[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(decode::<(String, u32)>(&huge, "pair").is_err());
        let big = vec![0u8; MAX_ENCODED_BYTES + 1];
        assert!(encode(&big).is_err(), "encoding past the limit is refused");
    }

    /// `encode_into` appends what `encode` returns, and leaves the buffer as it was when it
    /// refuses.
    #[test]
    fn encode_into_appends_or_leaves_the_buffer_alone() {
        let mut out = b"before".to_vec();
        let len = encode_into(&("ab".to_string(), 7u32), &mut out).expect("encodes");
        let alone = encode(&("ab".to_string(), 7u32)).expect("encodes");
        assert_eq!((len, &out[6..]), (alone.len(), &alone[..]));
        let big = vec![0u8; MAX_ENCODED_BYTES + 1];
        assert!(encode_into(&big, &mut out).is_err());
        assert_eq!(&out[..6], b"before");
        assert_eq!(out.len(), 6 + len);
    }
}
