//! The negative test vectors of docs/log-format.md ("Negative test vectors"): damaged logs as
//! batch files in `tests/vectors/`, each with the first failure every verifier must report,
//! listed in `tests/vectors/expected.txt` and in the document.
//!
//! This file is also their generator, from fixed keys and contents (Ed25519 signatures are
//! deterministic), so the corpus is reproducible. The test regenerates every file and
//! requires the checked-in bytes to be identical (the corpus cannot drift from the code that
//! explains it), then runs `verify` on each checked-in file.
//!
//! After a deliberate change: `VECTORS_WRITE=1 cargo test -p sensor-log --test
//! negative_vectors generator` (only the writing test: the others read the files), then
//! review the diff of `tests/vectors/` and of the document's table.
//!
//! Each damage is made so that only the rule under test fails: the decoding and semantic
//! cases are re-hashed and re-signed with the log's own keys (a verifier that skipped the
//! rule would find the log intact), while the cases about hashes and signatures damage the
//! signed bytes after signing.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey};
use sensor_log::batch::{self, BatchHeader, BATCH_VERSION};
use sensor_log::batch_file::{BatchFile, BatchFileWriter};
use sensor_log::chain::{chain_next, leaf_hash, GENESIS_HEAD};
use sensor_log::record::{Hash, FORMAT_VERSION, FORMAT_VERSION_1};
use sensor_log::{
    codec, merkle, verify, Body, EndReason, EpochStart, KeyRotation, Pruned, Record, RecordHeader,
    Verdict,
};

const HOST: [u8; 16] = [0x11; 16];
const WALL_BASE: u64 = 1_700_000_000_000_000_000;

/// The signing key of a key epoch: the seed is 32 bytes of `0x06 + key_epoch` (mod 256), so
/// key epoch 1 has the documented vectors' key (seed `0x07`).
fn key(key_epoch: u64) -> SigningKey {
    SigningKey::from_bytes(&[key_epoch.wrapping_add(6) as u8; 32])
}

/// An event record's body: the documented `file_open` event with the pid set to `pid`.
fn event(pid: u32) -> Body {
    let mut body = sensor_log::vectors::records()[1].body.clone();
    if let Body::Event(e) = &mut body {
        if let Some(p) = &mut e.process {
            p.pid = pid;
        }
    }
    body
}

fn epoch_start(previous_epoch: Option<u64>, reason: EndReason, boot_id: &str) -> Body {
    Body::EpochStart(EpochStart {
        previous_epoch,
        // Filled in by `build` for a later epoch: the chain head before the record.
        previous_head: GENESIS_HEAD,
        reason,
        boot_id: boot_id.to_string(),
    })
}

fn rotation(key_epoch: u64) -> Body {
    Body::KeyRotation(KeyRotation {
        new_public_key: key(key_epoch).verifying_key().to_bytes(),
        key_epoch,
    })
}

/// A batch to build: its epoch, the format version of its records and their bodies.
struct Planned {
    epoch: u64,
    version: u16,
    bodies: Vec<Body>,
}

/// A batch of version-1 records, as every agent wrote before version 2.
fn planned(epoch: u64, bodies: Vec<Body>) -> Planned {
    Planned {
        epoch,
        version: FORMAT_VERSION_1,
        bodies,
    }
}

fn planned_v2(epoch: u64, bodies: Vec<Body>) -> Planned {
    Planned {
        version: FORMAT_VERSION,
        ..planned(epoch, bodies)
    }
}

/// The version-2 events of the test vectors: a `file_open` with a `Repeated` detail and a
/// `watch_overflow`.
fn v2_events() -> [Body; 2] {
    let [_, repeated, overflow] = sensor_log::vectors::v2_records();
    [repeated.body, overflow.body]
}

/// The base log: epoch 1 with a key rotation (batch 2) and a heartbeat (batch 4), then
/// epoch 2 after a clean stop.
///
/// | batch | epoch | key epoch | records |
/// | 1 | 1 | 1 | 1 EpochStart(First), 2 event, 3 event |
/// | 2 | 1 | 1 | 4 event, 5 KeyRotation(key epoch 2) |
/// | 3 | 1 | 2 | 6 event, 7 event |
/// | 4 | 1 | 2 | (heartbeat) |
/// | 5 | 2 | 2 | 8 EpochStart(CleanStop), 9 event |
fn base() -> Vec<Planned> {
    vec![
        planned(
            1,
            vec![epoch_start(None, EndReason::First, "b"), event(2), event(3)],
        ),
        planned(1, vec![event(4), rotation(2)]),
        planned(1, vec![event(6), event(7)]),
        planned(1, vec![]),
        planned(
            2,
            vec![epoch_start(Some(1), EndReason::CleanStop, "c"), event(9)],
        ),
    ]
}

/// A log written in version 2 from the start.
///
/// | batch | epoch | key epoch | records |
/// | 1 | 1 | 1 | 1 EpochStart(First), 2 event, 3 event with `Repeated` |
/// | 2 | 1 | 1 | 4 `watch_overflow` |
fn v2_log() -> Vec<Planned> {
    let [repeated, overflow] = v2_events();
    vec![
        planned_v2(
            1,
            vec![epoch_start(None, EndReason::First, "b"), event(2), repeated],
        ),
        planned_v2(1, vec![overflow]),
    ]
}

/// The base log (version 1), then batch 6 written in version 2 by the upgraded agent's
/// epoch 3: 10 EpochStart(CleanStop), 11 event with `Repeated`, 12 `watch_overflow`.
fn mixed() -> Vec<Planned> {
    let [repeated, overflow] = v2_events();
    let mut plan = base();
    plan.push(planned_v2(
        3,
        vec![
            epoch_start(Some(2), EndReason::CleanStop, "d"),
            repeated,
            overflow,
        ],
    ));
    plan
}

/// The base log after retention removed batches 1 and 2: batch 6 holds the `Pruned` record.
fn pruned() -> Vec<Planned> {
    let mut plan = base();
    plan.push(planned(
        2,
        vec![Body::Pruned(Pruned {
            up_to_seq: 5,
            records: 5,
            batches: 2,
        })],
    ));
    plan
}

/// Where `build` lets a case change a value before it is hashed and signed.
enum Stage<'a> {
    Record(&'a mut Record),
    RecordBytes(u64, &'a mut Vec<u8>),
    Header(&'a mut BatchHeader),
    HeaderBytes(u64, &'a mut Vec<u8>),
}

/// A sealed batch as it goes into a batch file.
#[derive(Clone)]
struct Sealed {
    header: Vec<u8>,
    signature: Vec<u8>,
    records: Vec<Vec<u8>>,
}

/// A built log: its batches and the key epoch its oldest batch is signed under.
struct Log {
    batches: Vec<Sealed>,
    first_key_epoch: u64,
}

/// Seals `plan` the way the agent's writer does (seq from 1, batch numbers from 1, each
/// header linked to the previous one, `first_key_epoch` then each rotation from the next
/// batch on), letting `tweak` change records and headers before they are hashed and signed.
fn build(plan: &[Planned], first_key_epoch: u64, mut tweak: impl FnMut(Stage<'_>)) -> Log {
    let (mut seq, mut head, mut prev_digest) = (1u64, GENESIS_HEAD, [0u8; 32]);
    let mut key_epoch = first_key_epoch;
    let mut batches = Vec::new();
    for (number, planned) in (1u64..).zip(plan) {
        let (first_seq, prev_head) = (seq, head);
        let mut records = Vec::new();
        let mut leaves: Vec<Hash> = Vec::new();
        let mut next_key_epoch = key_epoch;
        for body in &planned.bodies {
            let mut body = body.clone();
            match &mut body {
                Body::EpochStart(start) if start.previous_epoch.is_some() => {
                    start.previous_head = head
                }
                Body::KeyRotation(r) => next_key_epoch = r.key_epoch,
                _ => {}
            }
            let mut record = Record {
                header: RecordHeader {
                    version: planned.version,
                    host_id: HOST,
                    epoch: planned.epoch,
                    seq,
                    wall_ns: WALL_BASE + seq,
                    mono_ns: 5_000_000_000 + seq,
                },
                body,
            };
            tweak(Stage::Record(&mut record));
            let mut bytes = record.encode().expect("encodes");
            tweak(Stage::RecordBytes(seq, &mut bytes));
            let leaf = leaf_hash(&bytes);
            head = chain_next(&head, &leaf);
            leaves.push(leaf);
            records.push(bytes);
            seq += 1;
        }
        let mut header = BatchHeader {
            version: BATCH_VERSION,
            host_id: HOST,
            epoch: planned.epoch,
            number,
            first_seq,
            count: records.len() as u64,
            merkle_root: merkle::root(&leaves),
            prev_digest,
            prev_head,
            chain_head: head,
            key_epoch,
            wall_ns: WALL_BASE + 1_000_000_000 + number,
            anchor: None,
        };
        tweak(Stage::Header(&mut header));
        let mut header_bytes = codec::encode(&header).expect("encodes");
        tweak(Stage::HeaderBytes(number, &mut header_bytes));
        let digest = batch::digest(&header_bytes);
        let signature = key(header.key_epoch).sign(&digest).to_bytes().to_vec();
        prev_digest = digest;
        key_epoch = next_key_epoch;
        batches.push(Sealed {
            header: header_bytes,
            signature,
            records,
        });
    }
    Log {
        batches,
        first_key_epoch,
    }
}

fn untouched(_: Stage<'_>) {}

impl Log {
    /// The batch file an exporter writes: the oldest batch's key, then each batch followed
    /// by its records.
    fn file(&self) -> Vec<u8> {
        let keys = [(
            self.first_key_epoch,
            key(self.first_key_epoch).verifying_key(),
        )];
        let mut w = BatchFileWriter::start(Vec::new(), &keys).expect("writes");
        for b in &self.batches {
            w.batch(&b.header, &b.signature).expect("writes");
            for r in &b.records {
                w.record(r).expect("writes");
            }
        }
        w.finish().expect("writes")
    }

    /// Drops batches `numbers` (1-based) with their records, as retention would; the file
    /// then carries the key of the oldest retained batch.
    fn without_batches(mut self, numbers: std::ops::RangeInclusive<usize>) -> Log {
        self.batches.drain(numbers.start() - 1..*numbers.end());
        if let Some(first) = self.batches.first() {
            self.first_key_epoch = BatchHeader::decode(&first.header)
                .expect("an undamaged header")
                .key_epoch;
        }
        self
    }

    /// The records of batch `number` (1-based), to damage.
    fn records(&mut self, number: usize) -> &mut Vec<Vec<u8>> {
        &mut self.batches[number - 1].records
    }
}

/// One vector: its file name, what is damaged, and the expected outcome (`intact`,
/// `<position>: <reason>`, or `unreadable at byte N` for a file whose framing is refused).
struct Case {
    name: &'static str,
    damage: &'static str,
    outcome: String,
    /// A piece of the reference verifier's detail, which shows that the intended step failed
    /// (not part of `expected.txt`: other verifiers word their details their own way).
    because: &'static str,
    bytes: Vec<u8>,
}

fn case(
    name: &'static str,
    damage: &'static str,
    outcome: impl Into<String>,
    because: &'static str,
    bytes: Vec<u8>,
) -> Case {
    Case {
        name,
        damage,
        outcome: outcome.into(),
        because,
        bytes,
    }
}

/// Byte offsets in the encodings (docs/log-format.md, "Record" and "Batch header").
const RECORD_WALL_NS: usize = 34;
const RECORD_BODY_INDEX: usize = 50;
const HEADER_WALL_NS: usize = 186;
const HEADER_ANCHOR_TAG: usize = 194;

fn cases() -> Vec<Case> {
    // Logs that must verify: old (version 1), new (version 2) and both in one log.
    let mut out = vec![
        case(
            "intact.batches",
            "the base log: 9 records in 5 batches, a key rotation in batch 2, a heartbeat (batch 4), epoch 2 from seq 8",
            "intact",
            "",
            build(&base(), 1, untouched).file(),
        ),
        case(
            "intact-pruned.batches",
            "the base log after retention removed batches 1-2; batch 6 holds `Pruned { up_to_seq: 5 }`",
            "intact",
            "",
            build(&pruned(), 1, untouched).without_batches(1..=2).file(),
        ),
        case(
            "intact-v2.batches",
            "a log of version-2 records: batch 1 holds 1 EpochStart, 2 event, 3 event with a `Repeated` detail; batch 2 holds 4 `watch_overflow` event",
            "intact",
            "",
            build(&v2_log(), 1, untouched).file(),
        ),
        case(
            "intact-mixed.batches",
            "the base log (version 1), then batch 6 in version 2 (an upgraded agent): 10 EpochStart of epoch 3, 11 event with a `Repeated` detail, 12 `watch_overflow` event",
            "intact",
            "",
            build(&mixed(), 1, untouched).file(),
        ),
    ];

    // Damage to signed bytes after signing.
    let mut log = build(&base(), 1, untouched);
    log.records(3)[1][RECORD_WALL_NS] ^= 1;
    out.push(case(
        "record-byte-modified.batches",
        "one bit of record 7's `wall_ns` flipped: only the batch's Merkle root and chain head tell",
        "seq 6: modified",
        "does not match the signed Merkle root and chain head",
        log.file(),
    ));
    let mut log = build(&base(), 1, untouched);
    log.batches[2].header[HEADER_WALL_NS] ^= 1;
    out.push(case(
        "header-byte-modified.batches",
        "one bit of batch 3's `wall_ns` flipped",
        "batch 3: bad signature",
        "signature does not verify",
        log.file(),
    ));
    let mut log = build(&base(), 1, untouched);
    log.batches[2].header[HEADER_ANCHOR_TAG] = 2;
    out.push(case(
        "header-undecodable.batches",
        "batch 3's `anchor` option tag set to 02: the header does not decode (before any signature check)",
        "batch 3: modified",
        "header does not decode: malformed batch header: UnexpectedVariant",
        log.file(),
    ));
    let mut log = build(&base(), 1, untouched);
    log.batches[1].signature[40] ^= 1;
    out.push(case(
        "signature-modified.batches",
        "one bit of batch 2's signature (in `S`) flipped",
        "batch 2: bad signature",
        "signature does not verify",
        log.file(),
    ));
    let mut log = build(&base(), 1, untouched);
    log.records(3).remove(0);
    out.push(case(
        "record-deleted.batches",
        "record 6 removed",
        "seq 6: deleted",
        "records from 6 were removed",
        log.file(),
    ));
    out.push(case(
        "batch-deleted.batches",
        "batch 3 removed with its records 6 and 7",
        "batch 3: deleted",
        "batch 3 is missing",
        build(&base(), 1, untouched).without_batches(3..=3).file(),
    ));
    let mut log = build(&base(), 1, untouched);
    let again = log.batches[2].clone();
    log.batches.insert(3, again);
    out.push(case(
        "batch-repeated.batches",
        "batch 3 and its records 6 and 7 repeated after batch 3",
        "batch 3: inserted",
        "batch 3 comes again after batch 3",
        log.file(),
    ));
    let log = Log {
        batches: build(&base(), 1, untouched).batches,
        first_key_epoch: 7,
    };
    out.push(case(
        "no-key.batches",
        "the file carries the key of key epoch 7 only, and nothing pins the key of batch 1's key epoch 1",
        "batch 1: bad signature",
        "no public key for key epoch 1",
        log.file(),
    ));
    let mut log = build(&base(), 1, untouched);
    let mut forged = log.records(3)[0].clone();
    forged[RECORD_WALL_NS] ^= 1;
    log.records(3).insert(0, forged);
    out.push(case(
        "record-inserted.batches",
        "a forged record claiming seq 6 (record 6 with one bit of `wall_ns` flipped) inserted before record 6",
        "seq 6: inserted",
        "record 6 was pushed to position 7",
        log.file(),
    ));
    let mut log = build(&base(), 1, untouched);
    log.records(3).swap(0, 1);
    out.push(case(
        "records-reordered.batches",
        "records 6 and 7 swapped",
        "seq 6: reordered",
        "holds record 7 and the next row holds record 6",
        log.file(),
    ));
    let mut longer = base();
    longer.push(planned(2, vec![event(10)]));
    let mut log = build(&longer, 1, untouched);
    let uncovered = log.batches.pop().expect("batch 6").records;
    log.records(5).extend(uncovered);
    out.push(case(
        "record-not-covered.batches",
        "record 10 after the last batch (batch 5 covers seq 8-9); its own batch removed",
        "seq 10: inserted",
        "no signed batch covers this record",
        log.file(),
    ));
    out.push(case(
        "no-batches.batches",
        "a file with a key and no batch at all",
        "batch 1: deleted",
        "the log has no batches",
        Log {
            batches: vec![],
            first_key_epoch: 1,
        }
        .file(),
    ));
    out.push(case(
        "pruned-without-record.batches",
        "batches 1-2 removed and no `Pruned` record accounts for seq 1-5",
        "seq 5: deleted",
        "no Pruned record says so",
        build(&base(), 1, untouched).without_batches(1..=2).file(),
    ));

    // Decoding rules, re-hashed and re-signed.
    out.push(case(
        "record-truncated.batches",
        "the last byte of record 5 (KeyRotation) cut, then re-hashed and re-signed",
        "seq 5: modified",
        "malformed record: UnexpectedEnd",
        build(&base(), 1, |s| {
            if let Stage::RecordBytes(5, bytes) = s {
                bytes.pop();
            }
        })
        .file(),
    ));
    out.push(case(
        "record-trailing-byte.batches",
        "a 00 byte appended to record 5 (KeyRotation), then re-hashed and re-signed",
        "seq 5: modified",
        "does not decode: malformed record: 1 trailing bytes",
        build(&base(), 1, |s| {
            if let Stage::RecordBytes(5, bytes) = s {
                bytes.push(0);
            }
        })
        .file(),
    ));
    out.push(case(
        "header-trailing-byte.batches",
        "a 00 byte appended to batch 3's header, then signed",
        "batch 3: modified",
        "header does not decode: malformed batch header: 1 trailing bytes",
        build(&base(), 1, |s| {
            if let Stage::HeaderBytes(3, bytes) = s {
                bytes.push(0);
            }
        })
        .file(),
    ));
    out.push(case(
        "oversized-length-prefix.batches",
        "record 8's `boot_id` length prefix set to 2^40 (more than MAX_ENCODED_BYTES), then re-hashed and re-signed",
        "seq 8: modified",
        "malformed record: LimitExceeded",
        build(&base(), 1, |s| {
            if let Stage::RecordBytes(8, bytes) = s {
                // `boot_id` "c" is the last field: its u64 length sits 9 bytes from the end.
                let at = bytes.len() - 9;
                bytes[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
            }
        })
        .file(),
    ));
    out.push(case(
        "unknown-record-kind.batches",
        "record 5's body index set to 5 (no such record kind), then re-hashed and re-signed",
        "seq 5: modified",
        "expected variant index 0 <= i < 5",
        build(&base(), 1, |s| {
            if let Stage::RecordBytes(5, bytes) = s {
                bytes[RECORD_BODY_INDEX] = 5;
            }
        })
        .file(),
    ));
    let log = build(&base(), 1, untouched);
    let last_record = log.batches[4].records[1].len();
    let mut framing = log.file();
    let at = framing.len() - last_record - 4;
    framing[at..at + 4].copy_from_slice(&(1u32 << 31).to_le_bytes());
    out.push(case(
        "oversized-record-item.batches",
        "the batch file's length of its last record item set to 2^31: refused before allocating, as an error, not a verdict",
        format!("unreadable at byte {at}"),
        "a record of 2147483648 bytes is over the 1048576-byte limit",
        framing,
    ));

    // Rules of the log, re-signed.
    out.push(case(
        "header-unknown-version.batches",
        "batch 3's header with `version` 2 (batch headers stay at version 1 while records are at 2), signed",
        "batch 3: modified",
        "unknown format version 2",
        build(&base(), 1, |s| {
            if let Stage::Header(h) = s {
                if h.number == 3 {
                    h.version = 2;
                }
            }
        })
        .file(),
    ));
    out.push(case(
        "record-unknown-version.batches",
        "record 6 with `version` 3, hashed and signed",
        "seq 6: modified",
        "unknown format version 3",
        build(&base(), 1, |s| {
            if let Stage::Record(r) = s {
                if r.header.seq == 6 {
                    r.header.version = 3;
                }
            }
        })
        .file(),
    ));
    out.push(case(
        "count-overflow.batches",
        "batch 3's `count` set so that `first_seq + count` = 2^64, signed",
        "batch 3: modified",
        "record count overflows",
        build(&base(), 1, |s| {
            if let Stage::Header(h) = s {
                if h.number == 3 {
                    h.count = u64::MAX - 5;
                }
            }
        })
        .file(),
    ));
    out.push(case(
        "batch-number-overflow.batches",
        "a one-batch log whose batch is numbered 2^64-1 (no batch number can follow it), signed",
        "batch 18446744073709551615: modified",
        "no batch number can follow",
        build(&base()[..1], 1, |s| {
            if let Stage::Header(h) = s {
                h.number = u64::MAX;
            }
        })
        .file(),
    ));
    let mut two = base();
    two[1].bodies.push(rotation(2));
    out.push(case(
        "two-key-rotations.batches",
        "batch 2 holds two `KeyRotation` records (seq 5 and 6), both to key epoch 2",
        "seq 6: modified",
        "a second one in the same batch",
        build(&two, 1, untouched).file(),
    ));
    let mut wrong = base();
    wrong[1].bodies[1] = rotation(3);
    out.push(case(
        "key-rotation-wrong-epoch.batches",
        "record 5 rotates from key epoch 1 to key epoch 3",
        "seq 5: modified",
        "announces key epoch 3 in key epoch 1",
        build(&wrong, 1, untouched).file(),
    ));
    let mut last = base();
    last[1].bodies[1] = rotation(0);
    out.push(case(
        "key-epoch-overflow.batches",
        "the log starts at key epoch 2^64-1 and record 5 rotates to key epoch 0 (no key epoch follows 2^64-1)",
        "seq 5: modified",
        "announces key epoch 0 in key epoch 18446744073709551615",
        build(&last, u64::MAX, untouched).file(),
    ));
    out.push(case(
        "epoch-not-linking.batches",
        "record 8 (EpochStart of epoch 2) with `previous_head` all zeros instead of the chain head after record 7",
        "seq 8: modified",
        "EpochStart does not link to the previous epoch",
        build(&base(), 1, |s| {
            if let Stage::Record(r) = s {
                if let Body::EpochStart(start) = &mut r.body {
                    if r.header.seq == 8 {
                        start.previous_head = GENESIS_HEAD;
                    }
                }
            }
        })
        .file(),
    ));
    out.push(case(
        "epoch-overflow.batches",
        "a log pruned before seq 3 whose record 3 is in epoch 2^64-1, then an EpochStart of epoch 0 naming 2^64-1 as previous (no epoch follows 2^64-1)",
        "seq 4: modified",
        "EpochStart does not link to the previous epoch",
        build(
            &[
                planned(1, vec![epoch_start(None, EndReason::First, "b"), event(2)]),
                planned(u64::MAX, vec![event(3)]),
                planned(0, vec![epoch_start(Some(u64::MAX), EndReason::Crash, "b")]),
            ],
            1,
            untouched,
        )
        .without_batches(1..=1)
        .file(),
    ));
    out.push(case(
        "batch1-not-genesis.batches",
        "batch 1's `prev_head` not the genesis (all 0xaa), signed",
        "batch 1: modified",
        "batch 1 does not start at the genesis",
        build(&base(), 1, |s| {
            if let Stage::Header(h) = s {
                if h.number == 1 {
                    h.prev_head = [0xaa; 32];
                }
            }
        })
        .file(),
    ));
    out.push(case(
        "host-id-changed.batches",
        "batch 5 and its records with host id 0x22..., signed",
        "batch 5: modified",
        "host id differs from the first batch",
        build(&base(), 1, |s| match s {
            Stage::Record(r) if r.header.epoch == 2 => r.header.host_id = [0x22; 16],
            Stage::Header(h) if h.number == 5 => h.host_id = [0x22; 16],
            _ => {}
        })
        .file(),
    ));
    out
}

/// What `verify` says of a batch file, in the form of `expected.txt`, and its detail; a panic
/// is an outcome too (a wrong one: no input may crash the verifier), so every vector is
/// reported.
fn outcome(bytes: &[u8]) -> (String, String) {
    let verdict = std::panic::catch_unwind(|| {
        BatchFile::read(Cursor::new(bytes), Cursor::new(bytes))
            .and_then(|mut file| verify(&mut file, None))
    });
    let Ok(verdict) = verdict else {
        return ("a panic".to_string(), String::new());
    };
    match verdict {
        Ok(Verdict::Intact(_)) => ("intact".to_string(), String::new()),
        Ok(Verdict::Tampered(f)) => (format!("{}: {}", f.position, f.reason), f.detail),
        Err(e) => {
            let text = e.to_string();
            let byte = text
                .split_once("at byte ")
                .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next());
            match byte {
                Some(n) if !n.is_empty() => (format!("unreadable at byte {n}"), text),
                _ => (format!("error: {text}"), text),
            }
        }
    }
}

const EXPECTED: &str = "expected.txt";

/// The corpus's index: one line per file, `name<TAB>outcome<TAB>damage`.
fn expected_txt(cases: &[Case]) -> String {
    let mut out = String::from(
        "# Negative test vectors of docs/log-format.md: file, the first failure a verifier \
         must report (or `intact`), what was damaged. Generated by tests/negative_vectors.rs.\n",
    );
    for c in cases {
        out.push_str(&format!("{}\t{}\t{}\n", c.name, c.outcome, c.damage));
    }
    out
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

#[test]
fn generator_reproduces_the_checked_in_corpus() {
    let dir = vectors_dir();
    let cases = cases();
    let mut files: BTreeMap<String, Vec<u8>> = cases
        .iter()
        .map(|c| (c.name.to_string(), c.bytes.clone()))
        .collect();
    assert_eq!(files.len(), cases.len(), "case names are unique");
    files.insert(EXPECTED.to_string(), expected_txt(&cases).into_bytes());
    if std::env::var_os("VECTORS_WRITE").is_some() {
        std::fs::create_dir_all(&dir).expect("create tests/vectors");
        for entry in std::fs::read_dir(&dir).expect("read tests/vectors") {
            let path = entry.expect("entry").path();
            std::fs::remove_file(&path).expect("remove an old vector");
        }
        for (name, bytes) in &files {
            std::fs::write(dir.join(name), bytes).expect("write a vector");
        }
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/vectors exists (VECTORS_WRITE=1 creates it)")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    let drift: Vec<&String> = files
        .iter()
        .filter(|(name, bytes)| std::fs::read(dir.join(name)).ok().as_ref() != Some(*bytes))
        .map(|(name, _)| name)
        .collect();
    assert!(
        drift.is_empty() && present == files.keys().cloned().collect::<Vec<_>>(),
        "tests/vectors differs from what this generator writes ({drift:?} differ; present: \
         {present:?}); if the change is deliberate, run VECTORS_WRITE=1 cargo test -p sensor-log \
         --test negative_vectors generator and update docs/log-format.md"
    );
}

#[test]
fn every_vector_fails_first_where_and_why_it_is_expected() {
    let dir = vectors_dir();
    let mut wrong = Vec::new();
    for c in cases() {
        let bytes = std::fs::read(dir.join(c.name)).expect("a checked-in vector");
        let (got, detail) = outcome(&bytes);
        if got != c.outcome || !detail.contains(c.because) {
            wrong.push(format!(
                "{}: expected `{}` ({}), verify says `{got}` ({detail})",
                c.name, c.outcome, c.because
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_specification_lists_every_vector_with_its_outcome() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/log-format.md"
    ))
    .expect("docs/log-format.md");
    let missing: Vec<String> = cases()
        .iter()
        .filter(|c| {
            !doc.lines().any(|l| {
                l.starts_with(&format!("| `{}` |", c.name))
                    && l.ends_with(&format!("| {} |", c.outcome))
            })
        })
        .map(|c| format!("| `{}` | {} | {} |", c.name, c.damage, c.outcome))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/log-format.md, \"Negative test vectors\", lacks these rows:\n{}",
        missing.join("\n")
    );
}
