//! A real store exported to a batch file and verified by the same verifier, over the file
//! alone: an intact log verifies with the same counts, and each attack on the signed bytes
//! made in the store is still found in the exported file, at the position the bytes allow.
//! Damage to the file's framing is an error naming the byte offset, never a panic.

mod common;

use common::{db, written};

use std::io::Cursor;
use std::path::Path;

use rusqlite::Connection;
use sensor_log::batch_file::{BatchFile, BatchFileWriter, ITEM_RECORD, MAGIC};
use sensor_log::verify::READ_AHEAD_RECORDS;
use sensor_log::{Position, Reason, Verdict};
use sensor_store::{tamper, verify, Store};

fn exported(dir: &Path) -> Vec<u8> {
    let store = Store::open_read_only(dir).expect("open store");
    store.export(Vec::new()).expect("export").0
}

fn file_verdict(bytes: &[u8]) -> sensor_log::Result<Verdict> {
    let mut file = BatchFile::read(Cursor::new(bytes), Cursor::new(bytes))?;
    sensor_log::verify(&mut file, None)
}

fn file_failure(dir: &Path) -> (Position, Reason) {
    match file_verdict(&exported(dir)).expect("file reads") {
        Verdict::Tampered(f) => (f.position, f.reason),
        Verdict::Intact(s) => panic!("tampering not detected in the file: {s:?}"),
    }
}

fn store_failure(dir: &Path) -> (Position, Reason) {
    let store = Store::open_read_only(dir).expect("open store");
    match verify(&store, None).expect("verify runs") {
        Verdict::Tampered(f) => (f.position, f.reason),
        Verdict::Intact(s) => panic!("tampering not detected in the store: {s:?}"),
    }
}

fn batch_of(conn: &Connection, seq: i64) -> (i64, i64) {
    conn.query_row(
        "SELECT number, first_seq FROM batches WHERE first_seq <= ?1 AND first_seq + count > ?1",
        [seq],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("batch of seq")
}

#[test]
fn intact_log_verifies_from_its_file_with_the_same_summary() {
    let dir = written();
    let store = Store::open_read_only(dir.path()).expect("open");
    let Verdict::Intact(from_store) = verify(&store, None).expect("verify") else {
        panic!("store not intact")
    };
    let (bytes, exported) = store.export(Vec::new()).expect("export");
    assert_eq!(
        (exported.batches, exported.records),
        (from_store.batches, from_store.records)
    );
    let Verdict::Intact(from_file) = file_verdict(&bytes).expect("reads") else {
        panic!("file not intact")
    };
    assert_eq!(from_file, from_store);
    assert!(from_file.key_from_store, "the key came from the file");
}

#[test]
fn a_modified_record_is_found_in_its_batch() {
    let dir = written();
    let conn = db(dir.path());
    common::flip_record_bit(&conn, 40);
    // The store keeps a leaf hash per record and names the record; the file holds the
    // signed bytes only, so the batch's Merkle root names its first record.
    assert_eq!(
        store_failure(dir.path()),
        (Position::Seq(40), Reason::Modified)
    );
    let (_, first) = batch_of(&conn, 40);
    assert_eq!(
        file_failure(dir.path()),
        (Position::Seq(first as u64), Reason::Modified)
    );
}

#[test]
fn deleted_reordered_and_inserted_records_are_named_from_the_file() {
    let dir = written();
    tamper::delete(&db(dir.path()), 40);
    assert_eq!(
        file_failure(dir.path()),
        (Position::Seq(40), Reason::Deleted)
    );

    let dir = written();
    tamper::swap(&db(dir.path()), 40, 41);
    assert_eq!(
        file_failure(dir.path()),
        (Position::Seq(40), Reason::Reordered)
    );

    // Every record from 40 on moved one row later, a copy of record 39 in its place.
    let dir = written();
    tamper::edit_rows(&db(dir.path()), |rows| {
        for row in rows.iter_mut().filter(|r| r.seq >= 40) {
            row.seq += 1;
        }
        let mut copy = tamper::row(rows, 39).clone();
        copy.seq = 40;
        rows.push(copy);
    });
    assert_eq!(
        file_failure(dir.path()),
        (Position::Seq(39), Reason::Inserted)
    );
}

#[test]
fn deleted_batches_and_forged_signatures_are_named_from_the_file() {
    let dir = written();
    db(dir.path())
        .execute("DELETE FROM batches WHERE number = 3", [])
        .expect("delete");
    assert_eq!(
        file_failure(dir.path()),
        (Position::Batch(3), Reason::Deleted)
    );

    let dir = written();
    db(dir.path())
        .execute(
            "UPDATE batches SET signature = zeroblob(64) WHERE number = 2",
            [],
        )
        .expect("forge");
    assert_eq!(
        file_failure(dir.path()),
        (Position::Batch(2), Reason::BadSignature)
    );

    // Pinned to another key, the very first batch fails.
    let dir = written();
    let bytes = exported(dir.path());
    let other = ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key();
    let mut file = BatchFile::read(Cursor::new(&bytes), Cursor::new(&bytes)).expect("reads");
    match sensor_log::verify(&mut file, Some(&other)).expect("verifies") {
        Verdict::Tampered(f) => assert_eq!(
            (f.position, f.reason),
            (Position::Batch(1), Reason::BadSignature)
        ),
        Verdict::Intact(_) => panic!("verified with another key"),
    }
}

#[test]
fn a_cut_file_is_a_deletion_at_item_boundaries_and_an_error_inside_an_item() {
    let dir = written();
    let bytes = exported(dir.path());
    // Cut after the last batch item's header: its records are missing.
    let mut last_batch_records = 0;
    for cut in (MAGIC.len()..bytes.len()).rev() {
        match file_verdict(&bytes[..cut]) {
            Err(e) => {
                let text = e.to_string();
                assert!(text.contains("at byte"), "{text}");
                assert!(text.contains("file ends inside"), "{text}");
            }
            Ok(Verdict::Tampered(f)) => {
                assert_eq!(f.reason, Reason::Deleted, "cut at {cut}: {f}");
                last_batch_records += 1;
            }
            Ok(Verdict::Intact(s)) => {
                // Cut exactly between batches: the tail is gone and only a collector or the
                // TPM can tell (docs/tpm.md); what remains verifies.
                assert!(s.records < 101, "cut at {cut}");
            }
        }
        if last_batch_records > 2 {
            break;
        }
    }
    assert!(last_batch_records > 0);
}

#[test]
fn framing_damage_is_refused_with_the_reason() {
    let dir = written();
    let bytes = exported(dir.path());
    let err = |b: &[u8]| match file_verdict(b) {
        Err(e) => e.to_string(),
        Ok(v) => panic!("accepted: {v:?}"),
    };
    let mut bad = bytes.clone();
    bad[0] ^= 1;
    assert!(err(&bad).contains("at byte 0: not a batch file (bad magic)"));
    let mut bad = bytes.clone();
    bad[MAGIC.len()] = 9;
    assert!(err(&bad).contains("at byte 14: unknown batch file version 9"));
    // A record item claiming 4 GiB is refused before any allocation.
    let mut w = BatchFileWriter::start(Vec::new(), &[]).expect("start");
    w.record(b"x").expect("record");
    let mut bad = w.finish().expect("finish");
    let at = bad.len() - 5;
    assert_eq!(bad[at - 1], ITEM_RECORD);
    bad[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(
        err(&bad).contains("over the 1048576-byte limit"),
        "{}",
        err(&bad)
    );
    let mut bad = bytes.clone();
    bad.push(7);
    assert!(err(&bad).contains("unknown item tag 7"));
}

/// A log of three read-ahead chunks of the verifier (`sensor-log`'s `rows`): what it meets
/// ahead of its walk must not change the verdict.
fn long_log() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_log(dir.path(), 2 * CHUNK + 1000, 64);
    dir
}

/// Records per read-ahead chunk; seq 1 is the first record of the first chunk.
const CHUNK: u64 = READ_AHEAD_RECORDS as u64;

#[test]
fn attacks_across_read_ahead_chunks_are_named_at_the_same_positions() {
    // The last record of the first chunk and the first of the second, swapped.
    let dir = long_log();
    let chunk = i64::try_from(CHUNK).expect("seq");
    tamper::swap(&db(dir.path()), chunk, chunk + 1);
    assert_eq!(
        file_failure(dir.path()),
        (Position::Seq(CHUNK), Reason::Reordered)
    );
    assert_eq!(
        store_failure(dir.path()),
        (Position::Seq(CHUNK), Reason::Reordered)
    );

    // The last record of the second chunk deleted: its successor comes from the third.
    let dir = long_log();
    tamper::delete(&db(dir.path()), 2 * i64::try_from(CHUNK).expect("seq"));
    assert_eq!(
        file_failure(dir.path()),
        (Position::Seq(2 * CHUNK), Reason::Deleted)
    );
    assert_eq!(
        store_failure(dir.path()),
        (Position::Seq(2 * CHUNK), Reason::Deleted)
    );
}

#[test]
fn a_read_error_met_ahead_comes_after_an_earlier_tampering() {
    let dir = long_log();
    let conn = db(dir.path());
    let modified = 2 * CHUNK - 100;
    common::flip_record_bit(&conn, i64::try_from(modified).expect("small"));
    let (_, first) = batch_of(&conn, i64::try_from(modified).expect("small"));
    let bytes = exported(dir.path());
    // Cut inside the file's last item: reading it is an error, which the read-ahead meets
    // in the third chunk while the walk is still in the second, before the modified record.
    let cut = &bytes[..bytes.len() - 3];
    match file_verdict(cut) {
        Ok(Verdict::Tampered(f)) => assert_eq!(
            (f.position, f.reason),
            (Position::Seq(first as u64), Reason::Modified)
        ),
        other => panic!("the modified record {modified} must be the verdict, got {other:?}"),
    }
    // Intact up to the cut: the error is the answer.
    let dir = long_log();
    let bytes = exported(dir.path());
    let err = file_verdict(&bytes[..bytes.len() - 3]).expect_err("a cut item is an error");
    assert!(err.to_string().contains("file ends inside"), "{err}");
}
