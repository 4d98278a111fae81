//! Property tests of the TPM structures a verifier reads from the log, which anyone who can
//! write the log controls: `TPMS_ATTEST` (`parse_attest`), the AK's `TPMT_PUBLIC`
//! (`AkPublic::sec1_point`) and whole quotes (`verify_quote`). Any bytes give a value or an
//! error, never a panic; a quote signed by a real P-256 key (made here, as no TPM is needed
//! to sign) verifies, and any one changed byte of it, of its signature or of the key's
//! public area is refused.
//!
//! The case count is proptest's (256, or `PROPTEST_CASES`); to search longer:
//! `PROPTEST_CASES=100000 cargo test --release -p sensor-tpm --test attest_props`.

use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use proptest::collection::vec;
use proptest::prelude::*;
use sensor_tpm::attest::TPM_GENERATED;
use sensor_tpm::{parse_attest, verify_quote, AkPublic, ClockInfo, ParsedAttest, Quote};
use sha2::{Digest, Sha256};

const ST_ATTEST_QUOTE: u16 = 0x8018;
const ALG_SHA256: u16 = 0x000b;

fn tpm2b(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u16::try_from(bytes.len()).expect("fits").to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Marshals a `TPMS_ATTEST` of a quote (TPM 2.0 Library, Part 2); `banks` holds each bank's
/// hash algorithm and its selection bitmap.
fn marshal_attest(a: &ParsedAttest, banks: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut out = a.magic.to_be_bytes().to_vec();
    out.extend_from_slice(&a.attest_type.to_be_bytes());
    tpm2b(&mut out, &a.qualified_signer);
    tpm2b(&mut out, &a.extra_data);
    out.extend_from_slice(&a.clock.clock.to_be_bytes());
    out.extend_from_slice(&a.clock.reset_count.to_be_bytes());
    out.extend_from_slice(&a.clock.restart_count.to_be_bytes());
    out.push(u8::from(a.clock.safe));
    out.extend_from_slice(&a.firmware_version.to_be_bytes());
    out.extend_from_slice(&(banks.len() as u32).to_be_bytes());
    for (hash, bits) in banks {
        out.extend_from_slice(&hash.to_be_bytes());
        out.push(u8::try_from(bits.len()).expect("fits"));
        out.extend_from_slice(bits);
    }
    tpm2b(&mut out, &a.pcr_digest);
    out
}

/// The PCR indexes a selection bitmap names, as the TPM numbers them.
fn selected(bits: &[u8]) -> Vec<u32> {
    (0..bits.len() as u32 * 8)
        .filter(|i| bits[*i as usize / 8] & (1 << (i % 8)) != 0)
        .collect()
}

/// The `TPMT_PUBLIC` of a restricted ECDSA P-256 signing key as a TPM creates an AK.
fn ak_public(key: &SigningKey) -> AkPublic {
    let point = key.verifying_key().to_encoded_point(false);
    let mut out = Vec::new();
    for v in [0x0023u16, ALG_SHA256] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    // fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign.
    let attrs: u32 = (1 << 1) | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 18);
    out.extend_from_slice(&attrs.to_be_bytes());
    tpm2b(&mut out, &[]);
    // symmetric NULL, scheme ECDSA with SHA-256, curve NIST P-256, kdf NULL.
    for v in [0x0010u16, 0x0018, ALG_SHA256, 0x0003, 0x0010] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    tpm2b(&mut out, point.x().expect("uncompressed"));
    tpm2b(&mut out, point.y().expect("uncompressed"));
    AkPublic { public_area: out }
}

fn attest_and_banks() -> impl Strategy<Value = (ParsedAttest, Vec<(u16, Vec<u8>)>)> {
    (
        any::<(u32, u16)>(),
        vec(any::<u8>(), 0..40),
        vec(any::<u8>(), 0..40),
        any::<(u64, u32, u32, bool, u64)>(),
        vec((any::<u16>(), vec(any::<u8>(), 0..5)), 0..=16),
        vec(any::<u8>(), 0..40),
    )
        .prop_map(
            |(
                (magic, attest_type),
                qualified_signer,
                extra_data,
                (clock, reset_count, restart_count, safe, firmware_version),
                banks,
                pcr_digest,
            )| {
                let parsed = ParsedAttest {
                    magic,
                    attest_type,
                    qualified_signer,
                    extra_data,
                    clock: ClockInfo {
                        clock,
                        reset_count,
                        restart_count,
                        safe,
                    },
                    firmware_version,
                    pcr_select: banks
                        .iter()
                        .map(|(hash, bits)| (*hash, selected(bits)))
                        .collect(),
                    pcr_digest,
                };
                (parsed, banks)
            },
        )
}

/// A P-256 key from any 32 bytes that are a valid scalar.
fn signing_key() -> impl Strategy<Value = SigningKey> {
    any::<[u8; 32]>().prop_filter_map("not a P-256 scalar", |b| SigningKey::from_slice(&b).ok())
}

/// A TPM-generated quote's attest; the PCR selection is marshalled from the banks.
fn quote_attest(
    qualified_signer: Vec<u8>,
    extra_data: Vec<u8>,
    pcr_digest: Vec<u8>,
) -> ParsedAttest {
    ParsedAttest {
        magic: TPM_GENERATED,
        attest_type: ST_ATTEST_QUOTE,
        qualified_signer,
        extra_data,
        clock: ClockInfo {
            clock: 1,
            reset_count: 2,
            restart_count: 3,
            safe: true,
        },
        firmware_version: 4,
        pcr_select: Vec::new(),
        pcr_digest,
    }
}

/// A quote as the agent's TPM makes it: TPM_GENERATED, signed by `key`, over `nonce` and
/// the single SHA-256 PCR `pcr_index` holding `pcr_value`.
fn signed_quote(key: &SigningKey, nonce: [u8; 32], pcr_index: u32, pcr_value: [u8; 32]) -> Quote {
    let ak = ak_public(key);
    let mut bits = vec![0u8; 3];
    bits[pcr_index as usize / 8] |= 1 << (pcr_index % 8);
    let attest = marshal_attest(
        &quote_attest(
            ak.qualified_name(),
            nonce.to_vec(),
            Sha256::digest(pcr_value).to_vec(),
        ),
        &[(ALG_SHA256, bits)],
    );
    let signature: Signature = key.sign(&attest);
    let mut sig = [0u8; 64];
    sig.copy_from_slice(&signature.to_bytes());
    Quote {
        attest,
        signature: sig,
        pcr_index,
        pcr_value,
        ak_public: ak,
    }
}

/// Which part of a signed quote one byte is changed in.
#[derive(Clone, Copy, Debug)]
enum Part {
    Attest,
    Signature,
    AkPublic,
}

proptest! {
    // Failures print the shrunk input; no regression file beside an integration test.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_are_an_attest_or_an_error(bytes in vec(any::<u8>(), 0..300)) {
        let _ = parse_attest(&bytes);
        let _ = AkPublic { public_area: bytes }.sec1_point();
    }

    #[test]
    fn attests_round_trip((parsed, banks) in attest_and_banks()) {
        let bytes = marshal_attest(&parsed, &banks);
        let back = parse_attest(&bytes);
        if parsed.attest_type == ST_ATTEST_QUOTE {
            prop_assert_eq!(back.expect("parses"), parsed);
        } else {
            prop_assert!(back.is_err(), "only quotes are accepted");
        }
    }

    /// More than 16 banks is refused, even when the bytes hold them all; a huge count is
    /// refused before the loop.
    #[test]
    fn bank_counts_are_bounded(
        banks in vec((any::<u16>(), vec(any::<u8>(), 0..3)), 17..40),
        count in 17..=u32::MAX,
        tail in vec(any::<u8>(), 0..64),
    ) {
        let attest = quote_attest(Vec::new(), Vec::new(), Vec::new());
        prop_assert!(parse_attest(&marshal_attest(&attest, &banks)).is_err());
        let mut bytes = marshal_attest(&attest, &[]);
        // Replace the bank count (4 bytes) and the empty digest (2) with the claimed count.
        bytes.truncate(bytes.len() - 6);
        bytes.extend_from_slice(&count.to_be_bytes());
        bytes.extend_from_slice(&tail);
        prop_assert!(parse_attest(&bytes).is_err());
    }

    #[test]
    fn every_change_and_cut_of_an_attest_is_an_attest_or_an_error(
        (parsed, banks) in attest_and_banks(),
        value in any::<u8>(),
    ) {
        let bytes = marshal_attest(&parsed, &banks);
        for at in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[at] = value;
            let _ = parse_attest(&changed);
            prop_assert!(parse_attest(&bytes[..at]).is_err(), "{} of {} bytes parsed", at, bytes.len());
        }
    }

    #[test]
    fn every_change_and_cut_of_an_ak_is_a_key_or_an_error(key in signing_key(), value in any::<u8>()) {
        let ak = ak_public(&key);
        prop_assert_eq!(
            ak.sec1_point().expect("a TPM-made AK is suitable"),
            key.verifying_key().to_encoded_point(false).as_bytes().to_vec()
        );
        let bytes = ak.public_area;
        for at in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[at] = value;
            let _ = AkPublic { public_area: changed }.sec1_point();
            let cut = AkPublic { public_area: bytes[..at].to_vec() };
            prop_assert!(cut.sec1_point().is_err(), "{} of {} bytes parsed", at, bytes.len());
        }
    }

    /// Signing and verifying cost about 0.1 ms each, so each case changes one random byte
    /// rather than every byte.
    #[test]
    fn a_signed_quote_verifies_and_any_changed_byte_is_refused(
        key in signing_key(),
        nonce in any::<[u8; 32]>(),
        pcr_index in 0..24u32,
        pcr_value in any::<[u8; 32]>(),
        part in prop::sample::select(vec![Part::Attest, Part::Signature, Part::AkPublic]),
        at in any::<prop::sample::Index>(),
        flip in 1..=255u8,
    ) {
        let quote = signed_quote(&key, nonce, pcr_index, pcr_value);
        let ak = quote.ak_public.clone();
        let info = verify_quote(&quote, &ak, &nonce, &pcr_value).expect("a signed quote verifies");
        prop_assert_eq!(info.pcr_index, pcr_index);
        prop_assert_eq!(info.qualifying_data, nonce.to_vec());

        let (mut changed, mut changed_ak) = (quote.clone(), ak.clone());
        let bytes: &mut [u8] = match part {
            Part::Attest => &mut changed.attest,
            Part::Signature => &mut changed.signature,
            Part::AkPublic => &mut changed_ak.public_area,
        };
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        prop_assert!(
            verify_quote(&changed, &changed_ak, &nonce, &pcr_value).is_err(),
            "byte {} of the {:?} changed, still verifies", i, part
        );
    }

    #[test]
    fn any_attest_and_signature_under_a_real_key_are_refused(
        key in signing_key(),
        attest in vec(any::<u8>(), 0..200),
        (r, s) in any::<([u8; 32], [u8; 32])>(),
    ) {
        let ak = ak_public(&key);
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r);
        sig[32..].copy_from_slice(&s);
        let quote = Quote { attest, signature: sig, pcr_index: 14, pcr_value: [0; 32], ak_public: ak.clone() };
        prop_assert!(verify_quote(&quote, &ak, &[0; 32], &[0; 32]).is_err());
    }
}
