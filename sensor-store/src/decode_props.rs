//! Property tests of the crate-private readers of stored bytes: the verifier's record peek,
//! the index check's in-place term reader, and the postings decoder. Like the public
//! decoders (tests/decode_props.rs), they return a value or an error on any bytes, and agree
//! with the full decode where both apply.
//!
//! `PROPTEST_CASES=100000 cargo test --release -p sensor-store --lib decode_props` searches longer.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::index::{decode_offsets, each_term, encode_offsets, DIMS};
use crate::index_check::terms_in_place;
use sensor_log::record::{peek, Body, Record, RecordHeader, BODY_TAG_EVENT};
use sensor_log::vectors::{records as vector_records, v2_records};

/// The documented vector records (versions 1 and 2) under an arbitrary header, and the
/// encoding of one (in the layout its version names; one no reader knows is refused).
fn vector_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        // Mostly versions a reader knows, so that the comparison with the decode runs.
        (
            prop_oneof![3 => 1..=2u16, 1 => any::<u16>()],
            any::<[u8; 16]>(),
        ),
        any::<[u64; 4]>(),
        prop::sample::select([&vector_records()[..], &v2_records()[..]].concat()),
    )
        .prop_filter_map(
            "a version-1 event cannot carry a detail",
            |((version, host_id), [epoch, seq, wall_ns, mono_ns], mut r)| {
                r.header = RecordHeader {
                    version,
                    host_id,
                    epoch,
                    seq,
                    wall_ns,
                    mono_ns,
                };
                r.encode().ok()
            },
        )
}

/// `peek` and `terms_in_place` on `bytes` never panic, and agree with `Record::decode`
/// whenever it accepts them.
fn agrees_with_decode(bytes: &[u8]) -> Result<(), TestCaseError> {
    let peeked = peek(bytes);
    let in_place = terms_in_place(bytes);
    let Ok(record) = Record::decode(bytes) else {
        return Ok(());
    };
    let (header, tag) = peeked.expect("a decodable record peeks");
    prop_assert_eq!(header, record.header);
    prop_assert_eq!(tag == BODY_TAG_EVENT, matches!(record.body, Body::Event(_)));
    if matches!(record.body, Body::Event(_)) {
        let mut decoded = [None; DIMS];
        each_term(&record.body, |dim, term| {
            decoded[dim as usize - 1] = Some((dim, term))
        });
        prop_assert_eq!(
            in_place,
            Some((record.body.kind_name(), decoded)),
            "terms read in place differ from the decoded record's"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn peek_and_terms_in_place_take_any_bytes(bytes in vec(any::<u8>(), 0..200)) {
        prop_assert_eq!(peek(&bytes).is_ok(), bytes.len() >= 54, "peek needs exactly the header and tag");
        agrees_with_decode(&bytes)?;
    }

    #[test]
    fn peek_and_terms_in_place_take_every_change(
        bytes in vector_bytes(),
        value in any::<u8>(),
        huge in prop::sample::select(vec![u64::MAX, 1 << 40]),
    ) {
        agrees_with_decode(&bytes)?;
        for at in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[at] = value;
            agrees_with_decode(&changed)?;
            agrees_with_decode(&bytes[..at])?;
            if at + 8 <= bytes.len() {
                changed[at..at + 8].copy_from_slice(&huge.to_le_bytes());
                agrees_with_decode(&changed)?;
            }
        }
    }

    /// Any blob, for any batch size (a tampered row or header): offsets come out ascending
    /// and below `count`, at most `count` of them, or the blob is refused.
    #[test]
    fn offsets_of_any_blob_are_in_the_batch(
        // Small bytes are short gaps, which land near the end of a small batch.
        blob in prop_oneof![vec(0..4u8, 0..64), vec(any::<u8>(), 0..64)],
        count in prop_oneof![0..40u64, any::<u64>(), Just(u64::MAX)],
    ) {
        let mut seen = Vec::new();
        if decode_offsets(&blob, count, |o| seen.push(o)).is_ok() {
            prop_assert!(seen.windows(2).all(|w| w[0] < w[1]), "not ascending: {:?}", seen);
            prop_assert!(seen.iter().all(|&o| o < count));
            prop_assert!(seen.len() as u64 <= count);
        }
    }

    #[test]
    fn offsets_round_trip(mut offsets in vec(any::<u32>(), 0..40), extra in 1..1000u64) {
        offsets.sort_unstable();
        offsets.dedup();
        let count = offsets.last().map_or(0, |&o| u64::from(o)) + extra;
        let mut blob = Vec::new();
        encode_offsets(&offsets, &mut blob);
        let mut back = Vec::new();
        prop_assert!(decode_offsets(&blob, count, |o| back.push(o)).is_ok());
        prop_assert_eq!(back, offsets.iter().map(|&o| u64::from(o)).collect::<Vec<_>>());
        if let Some(&last) = offsets.last() {
            prop_assert!(
                decode_offsets(&blob, u64::from(last), |_| {}).is_err(),
                "offset {} accepted in a batch of {} records", last, last
            );
        }
    }
}
