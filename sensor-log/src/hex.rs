//! Lower-case hex for hashes, keys and host ids (no dependency needed for this).

use crate::error::{Error, Result};

pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// Decodes exactly `N` bytes of hex (surrounding whitespace allowed).
pub fn decode_array<const N: usize>(text: &str, what: &'static str) -> Result<[u8; N]> {
    let text = text.trim();
    if text.len() != N * 2 {
        return Err(Error::malformed(
            what,
            format!("expected {} hex digits, got {}", N * 2, text.len()),
        ));
    }
    let mut out = [0u8; N];
    for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
        let digit = |c: u8| {
            (c as char)
                .to_digit(16)
                .ok_or_else(|| Error::malformed(what, "not hex"))
        };
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?)
            .map_err(|e| Error::malformed(what, e))?;
    }
    Ok(out)
}
