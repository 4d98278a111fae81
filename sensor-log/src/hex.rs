//! Lower-case hex for hashes, keys and host ids, over the `hex` crate, with the error this
//! crate reports for untrusted text.

use crate::error::{Error, Result};

pub use hex::encode;

/// Decodes exactly `N` bytes of hex (surrounding whitespace allowed).
pub fn decode_array<const N: usize>(text: &str, what: &'static str) -> Result<[u8; N]> {
    let text = text.trim();
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|e| match e {
        hex::FromHexError::InvalidStringLength | hex::FromHexError::OddLength => Error::malformed(
            what,
            format!("expected {} hex digits, got {}", N * 2, text.len()),
        ),
        hex::FromHexError::InvalidHexCharacter { .. } => Error::malformed(what, "not hex"),
    })?;
    Ok(out)
}

/// Parses a public key given as 64 hex digits (`sensorctl verify --public-key`).
pub fn parse_public_key(text: &str) -> Result<ed25519_dalek::VerifyingKey> {
    let bytes = decode_array::<32>(text, "public key")?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|e| Error::malformed("public key", format!("not an Ed25519 public key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_exactly_n_bytes_and_names_what_is_wrong() {
        assert_eq!(decode_array::<2>(" 0aFf\n", "x").unwrap(), [0x0a, 0xff]);
        for (text, want) in [
            ("0a", "expected 4 hex digits, got 2"),
            ("0aff00", "expected 4 hex digits, got 6"),
            ("0ag0", "not hex"),
        ] {
            let e = decode_array::<2>(text, "x").unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        assert_eq!(encode([0x0a, 0xff]), "0aff");
    }
}
