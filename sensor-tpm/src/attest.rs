//! Quotes and their verification, in pure Rust so `sensorctl verify --tpm` needs no TPM and
//! no TSS library: the TPM structures involved are parsed here by hand (TPM 2.0 Library,
//! Part 2: big-endian, `TPM2B` = `u16` size then bytes).

use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::EncodedPoint;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// `TPM_GENERATED_VALUE`: only the TPM itself puts this at the start of data it signs with a
/// restricted key, which is what makes a quote unforgeable by software holding the key handle.
pub const TPM_GENERATED: u32 = 0xff54_4347;
const ST_ATTEST_QUOTE: u16 = 0x8018;
const ALG_SHA256: u16 = 0x000b;
const ALG_ECC: u16 = 0x0023;
const ALG_ECDSA: u16 = 0x0018;
const ALG_NULL: u16 = 0x0010;
const ECC_NIST_P256: u16 = 0x0003;
/// `TPM_RH_ENDORSEMENT`, the hierarchy the AK is created in (so clock counters are not
/// obfuscated in quotes, see `device`).
pub(crate) const RH_ENDORSEMENT: u32 = 0x4000_000b;

const FIXED_TPM: u32 = 1 << 1;
const FIXED_PARENT: u32 = 1 << 4;
const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
const RESTRICTED: u32 = 1 << 16;
const DECRYPT: u32 = 1 << 17;
const SIGN: u32 = 1 << 18;

/// TPM clock state as reported in a quote (`TPMS_CLOCK_INFO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered since it was last cleared.
    pub clock: u64,
    /// TPM Resets (reboots without an orderly suspend) since the TPM was cleared; a
    /// reboot always increments it, and it never decreases.
    pub reset_count: u32,
    /// TPM Restarts/Resumes since the last reset (suspend/hibernate cycles).
    pub restart_count: u32,
    /// False after an unorderly shutdown may have lost clock updates.
    pub safe: bool,
}

/// The public half of the attestation key: the marshalled `TPMT_PUBLIC`, so a verifier can
/// both check the key's properties and recompute its TPM name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AkPublic {
    pub public_area: Vec<u8>,
}

/// A quote over the anchor PCR, as `TpmWorker::quote` returns it and a verifier consumes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quote {
    /// Marshalled `TPMS_ATTEST`: the signed bytes.
    pub attest: Vec<u8>,
    /// ECDSA P-256 signature over SHA-256(attest), `r || s`, each 32 bytes big-endian.
    pub signature: [u8; 64],
    /// The quoted PCR index (SHA-256 bank).
    pub pcr_index: u32,
    /// The PCR value read right after the quote, in the same worker turn. Not signed: the
    /// attest only holds its digest, so a verifier must use its own expected value.
    pub pcr_value: [u8; 32],
    /// The key that signed the quote (for trust on first use; verifiers should pin it).
    pub ak_public: AkPublic,
}

/// What a verified quote says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteInfo {
    /// The quoted PCR; compare it with the log's `anchor.pcr_index`.
    pub pcr_index: u32,
    pub qualifying_data: Vec<u8>,
    pub clock: ClockInfo,
    pub firmware_version: u64,
    /// `SHA-256(pcr value)` for the single selected PCR.
    pub pcr_digest: Vec<u8>,
}

/// The parsed `TPMS_ATTEST` of a quote, before any checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedAttest {
    pub magic: u32,
    pub attest_type: u16,
    pub qualified_signer: Vec<u8>,
    pub extra_data: Vec<u8>,
    pub clock: ClockInfo,
    pub firmware_version: u64,
    /// `(hash algorithm, selected PCR indexes)` per bank, in order.
    pub pcr_select: Vec<(u16, Vec<u32>)>,
    pub pcr_digest: Vec<u8>,
}

/// Bounded big-endian reader: every read checks the remaining length first.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { buf, what }
    }
    fn err(&self, reason: impl Into<String>) -> Error {
        Error::Malformed {
            what: self.what,
            reason: reason.into(),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(self.err(format!("needs {n} more bytes, {} left", self.buf.len())));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn tpm2b(&mut self) -> Result<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    fn finish(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.err(format!("{} trailing bytes", self.buf.len())))
        }
    }
}

/// Parses a quote's `TPMS_ATTEST`; rejects any other attestation type.
pub fn parse_attest(attest: &[u8]) -> Result<ParsedAttest> {
    let mut r = Reader::new(attest, "TPMS_ATTEST");
    let magic = r.u32()?;
    let attest_type = r.u16()?;
    if attest_type != ST_ATTEST_QUOTE {
        return Err(r.err(format!("type {attest_type:#06x} is not a quote")));
    }
    let qualified_signer = r.tpm2b()?.to_vec();
    let extra_data = r.tpm2b()?.to_vec();
    let clock = ClockInfo {
        clock: r.u64()?,
        reset_count: r.u32()?,
        restart_count: r.u32()?,
        safe: r.u8()? != 0,
    };
    let firmware_version = r.u64()?;
    let count = r.u32()?;
    // A TPM has at most a handful of banks; refuse absurd counts before looping.
    if count > 16 {
        return Err(r.err(format!("{count} PCR banks")));
    }
    let mut pcr_select = Vec::new();
    for _ in 0..count {
        let hash = r.u16()?;
        let size = r.u8()?;
        let bits = r.take(usize::from(size))?;
        let mut pcrs = Vec::new();
        for (byte_index, byte) in bits.iter().enumerate() {
            for bit in 0..8u32 {
                if byte & (1 << bit) != 0 {
                    pcrs.push(byte_index as u32 * 8 + bit);
                }
            }
        }
        pcr_select.push((hash, pcrs));
    }
    let pcr_digest = r.tpm2b()?.to_vec();
    r.finish()?;
    Ok(ParsedAttest {
        magic,
        attest_type,
        qualified_signer,
        extra_data,
        clock,
        firmware_version,
        pcr_select,
        pcr_digest,
    })
}

/// The checked content of an AK public area.
struct AkKey {
    key: VerifyingKey,
}

impl AkPublic {
    /// The TPM name of the key: `nameAlg || SHA-256(TPMT_PUBLIC)`.
    pub fn name(&self) -> Vec<u8> {
        let mut name = ALG_SHA256.to_be_bytes().to_vec();
        name.extend_from_slice(&Sha256::digest(&self.public_area));
        name
    }

    /// The qualified name the TPM puts in `qualifiedSigner`, for a primary key of the
    /// endorsement hierarchy: `nameAlg || SHA-256(TPM_RH_ENDORSEMENT || name)`.
    pub fn qualified_name(&self) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(RH_ENDORSEMENT.to_be_bytes());
        h.update(self.name());
        let mut qn = ALG_SHA256.to_be_bytes().to_vec();
        qn.extend_from_slice(&h.finalize());
        qn
    }

    /// Uncompressed SEC1 point (`04 || x || y`), e.g. to print or pin the key.
    pub fn sec1_point(&self) -> Result<Vec<u8>> {
        Ok(self
            .checked()?
            .key
            .to_encoded_point(false)
            .as_bytes()
            .to_vec())
    }

    /// Parses the `TPMT_PUBLIC` and insists on what makes quotes trustworthy: a restricted,
    /// non-decrypting signing key that never leaves the TPM (fixedTPM, fixedParent,
    /// generated inside), ECDSA P-256 with SHA-256.
    fn checked(&self) -> Result<AkKey> {
        let mut r = Reader::new(&self.public_area, "AK TPMT_PUBLIC");
        let unsuitable = |s: String| Err(Error::AkUnsuitable(s));
        let alg = r.u16()?;
        if alg != ALG_ECC {
            return unsuitable(format!("key type {alg:#06x}, expected ECC"));
        }
        let name_alg = r.u16()?;
        if name_alg != ALG_SHA256 {
            return unsuitable(format!("name algorithm {name_alg:#06x}, expected SHA-256"));
        }
        let attrs = r.u32()?;
        let required = FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | RESTRICTED | SIGN;
        if attrs & required != required || attrs & DECRYPT != 0 {
            return unsuitable(format!(
                "object attributes {attrs:#010x}: not a restricted TPM-resident signing key"
            ));
        }
        let _auth_policy = r.tpm2b()?;
        let sym = r.u16()?;
        if sym != ALG_NULL {
            r.u16()?;
            r.u16()?;
        }
        let scheme = r.u16()?;
        if scheme != ALG_ECDSA {
            return unsuitable(format!("scheme {scheme:#06x}, expected ECDSA"));
        }
        let scheme_hash = r.u16()?;
        if scheme_hash != ALG_SHA256 {
            return unsuitable(format!("scheme hash {scheme_hash:#06x}, expected SHA-256"));
        }
        let curve = r.u16()?;
        if curve != ECC_NIST_P256 {
            return unsuitable(format!("curve {curve:#06x}, expected NIST P-256"));
        }
        let kdf = r.u16()?;
        if kdf != ALG_NULL {
            r.u16()?;
        }
        let x = r.tpm2b()?;
        let y = r.tpm2b()?;
        r.finish()?;
        let (x, y) = (pad32(x, "AK x")?, pad32(y, "AK y")?);
        let point = EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
        let key = VerifyingKey::from_encoded_point(&point)
            .map_err(|_| Error::AkUnsuitable("point is not on P-256".into()))?;
        Ok(AkKey { key })
    }
}

/// Left-pads a big-endian integer of at most 32 bytes (TPMs may drop leading zeros).
pub(crate) fn pad32(v: &[u8], what: &'static str) -> Result<[u8; 32]> {
    if v.len() > 32 {
        return Err(Error::Malformed {
            what,
            reason: format!("{} bytes, at most 32", v.len()),
        });
    }
    let mut out = [0; 32];
    out[32 - v.len()..].copy_from_slice(v);
    Ok(out)
}

/// Verifies a quote against a pinned AK, the nonce the verifier expects, and the PCR value
/// the verifier computed itself (by `replay` over the log): signature over the attest
/// structure, `TPM_GENERATED` magic, signer, nonce, that exactly the anchor PCR of the
/// SHA-256 bank was quoted, and its digest. Returns the signed content (clock counters).
///
/// `quote.pcr_value` and `quote.ak_public` are not trusted here: both come from the same
/// untrusted channel as the quote.
pub fn verify_quote(
    quote: &Quote,
    ak_public: &AkPublic,
    expected_qualifying_data: &[u8; 32],
    expected_pcr_value: &[u8; 32],
) -> Result<QuoteInfo> {
    let info = verify_quote_signed(quote, ak_public, expected_qualifying_data)?;
    if info.pcr_digest != Sha256::digest(expected_pcr_value).as_slice() {
        return Err(Error::PcrMismatch);
    }
    Ok(info)
}

/// [`verify_quote`] but for the PCR digest, which the caller matches itself: a verifier
/// that reads the PCR beside its quote while the agent extends it finds the quoted value
/// in the log's replay (`LogAnchorState::quoted_pcr`), not in what it read.
pub fn verify_quote_signed(
    quote: &Quote,
    ak_public: &AkPublic,
    expected_qualifying_data: &[u8; 32],
) -> Result<QuoteInfo> {
    let ak = ak_public.checked()?;
    let (mut r, mut s) = ([0u8; 32], [0u8; 32]);
    r.copy_from_slice(&quote.signature[..32]);
    s.copy_from_slice(&quote.signature[32..]);
    let sig = Signature::from_scalars(r, s).map_err(|_| Error::BadSignature)?;
    ak.key
        .verify(&quote.attest, &sig)
        .map_err(|_| Error::BadSignature)?;
    // Only now is the content worth interpreting.
    let parsed = parse_attest(&quote.attest)?;
    if parsed.magic != TPM_GENERATED {
        return Err(Error::Malformed {
            what: "TPMS_ATTEST",
            reason: format!("magic {:#010x} is not TPM_GENERATED", parsed.magic),
        });
    }
    if parsed.qualified_signer != ak_public.qualified_name() {
        return Err(Error::SignerMismatch);
    }
    if parsed.extra_data != expected_qualifying_data {
        return Err(Error::NonceMismatch);
    }
    if parsed.pcr_select != [(ALG_SHA256, vec![quote.pcr_index])] {
        return Err(Error::SelectionMismatch {
            expected: quote.pcr_index,
        });
    }
    Ok(QuoteInfo {
        pcr_index: quote.pcr_index,
        qualifying_data: parsed.extra_data,
        clock: parsed.clock,
        firmware_version: parsed.firmware_version,
        pcr_digest: parsed.pcr_digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for n in 0..64 {
            let buf = vec![0xffu8; n];
            assert!(parse_attest(&buf).is_err());
            let ak = AkPublic {
                public_area: buf.clone(),
            };
            let q = Quote {
                attest: buf,
                signature: [1; 64],
                pcr_index: 13,
                pcr_value: [0; 32],
                ak_public: ak.clone(),
            };
            assert!(verify_quote(&q, &ak, &[0; 32], &[0; 32]).is_err());
        }
    }

    #[test]
    fn pad32_left_pads_and_bounds() {
        let v = pad32(&[1, 2], "x").expect("fits");
        assert_eq!(&v[30..], &[1, 2]);
        assert!(v[..30].iter().all(|b| *b == 0));
        assert!(pad32(&[0; 33], "x").is_err());
    }
}
