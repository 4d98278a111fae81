//! Tampering with a real store written by the LogWriter: `verify` names the position and
//! the reason of the first failure.

mod common;

use common::{db, written};

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection};
use sensor_log::{Position, Reason, Timestamp, Verdict};
use sensor_store::{tamper, verify, LogWriter, Store};

fn verdict(dir: &Path) -> Verdict {
    let store = Store::open_read_only(dir).expect("open store");
    verify(&store, None).expect("verify runs")
}

fn failure(dir: &Path) -> (Position, Reason) {
    match verdict(dir) {
        Verdict::Tampered(f) => (f.position, f.reason),
        Verdict::Intact(s) => panic!("tampering not detected: {s:?}"),
    }
}

#[test]
fn intact_log_verifies() {
    let dir = written();
    let Verdict::Intact(s) = verdict(dir.path()) else {
        panic!("intact log failed")
    };
    assert_eq!(s.records, 101);
    assert_eq!(s.epochs, 1);
    assert!(s.key_from_store);
    assert!(s.batches >= 13);
}

#[test]
fn modified_byte_is_named() {
    let dir = written();
    common::flip_record_bit(&db(dir.path()), 40);
    assert_eq!(failure(dir.path()), (Position::Seq(40), Reason::Modified));
}

#[test]
fn modified_record_and_leaf_is_caught_by_the_batch() {
    let dir = written();
    let conn = db(dir.path());
    tamper::edit_rows(&conn, |rows| {
        let row = tamper::row(rows, 40);
        let last = row.bytes.len() - 20;
        row.bytes[last] ^= 0x01;
        row.leaf = sensor_log::chain::leaf_hash(&row.bytes).to_vec();
    });
    let first_of_batch: i64 = conn
        .query_row(
            "SELECT first_seq FROM batches WHERE first_seq <= 40 ORDER BY number DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("batch");
    assert_eq!(
        failure(dir.path()),
        (
            Position::Seq(u64::try_from(first_of_batch).expect("seq")),
            Reason::Modified
        )
    );
}

#[test]
fn deleted_record_is_named() {
    let dir = written();
    tamper::delete(&db(dir.path()), 50);
    assert_eq!(failure(dir.path()), (Position::Seq(50), Reason::Deleted));
}

#[test]
fn swapped_records_are_named() {
    let dir = written();
    tamper::swap(&db(dir.path()), 30, 31);
    assert_eq!(failure(dir.path()), (Position::Seq(30), Reason::Reordered));
}

#[test]
fn record_inserted_at_the_end_is_named() {
    let dir = written();
    tamper::edit_rows(&db(dir.path()), |rows| {
        let mut copy = tamper::row(rows, 20).clone();
        copy.seq += 1000;
        rows.push(copy);
    });
    assert_eq!(failure(dir.path()), (Position::Seq(1020), Reason::Inserted));
}

#[test]
fn record_inserted_in_the_middle_is_named() {
    let dir = written();
    // Shift records 60.. up by one and forge a record at 60 (a copy of 59 with its seq patched).
    tamper::edit_rows(&db(dir.path()), |rows| {
        for row in rows.iter_mut().filter(|r| r.seq >= 60) {
            row.seq += 1;
        }
        let mut forged = tamper::row(rows, 59).clone();
        // seq sits after version (2) + host id (16) + epoch (8).
        forged.bytes[26..34].copy_from_slice(&60u64.to_le_bytes());
        forged.leaf = sensor_log::chain::leaf_hash(&forged.bytes).to_vec();
        forged.seq = 60;
        rows.push(forged);
    });
    assert_eq!(failure(dir.path()), (Position::Seq(60), Reason::Inserted));
}

#[test]
fn replaced_signature_is_named() {
    let dir = written();
    let conn = db(dir.path());
    conn.execute("UPDATE batches SET signature = (SELECT signature FROM batches WHERE number = 2) WHERE number = 5", []).expect("update");
    assert_eq!(
        failure(dir.path()),
        (Position::Batch(5), Reason::BadSignature)
    );
}

#[test]
fn pinned_key_must_match() {
    let dir = written();
    let store = Store::open_read_only(dir.path()).expect("store");
    let key = store
        .current_key()
        .expect("key")
        .expect("present")
        .public_key;
    assert!(
        matches!(verify(&store, Some(&key)).expect("verify"), Verdict::Intact(s) if !s.key_from_store)
    );
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key();
    let Verdict::Tampered(f) = verify(&store, Some(&stranger)).expect("verify") else {
        panic!("stranger key accepted")
    };
    assert_eq!(
        (f.position, f.reason),
        (Position::Batch(1), Reason::BadSignature)
    );
}

#[test]
fn deleted_batch_is_named() {
    let dir = written();
    let conn = db(dir.path());
    tamper::edit_rows(&conn, |rows| rows.retain(|r| r.batch != 4));
    conn.execute("DELETE FROM batches WHERE number = 4", [])
        .expect("delete batch");
    assert_eq!(failure(dir.path()), (Position::Batch(4), Reason::Deleted));
}

#[test]
fn key_rotation_verifies_and_old_key_is_destroyed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = common::options(8);
    opts.key_rotation = Some(Duration::from_secs(60));
    let mut w = LogWriter::open(dir.path(), opts).expect("open");
    let mut now = Timestamp::now();
    for i in 0..40 {
        w.append(common::event(i), now.wall_ns, now.mono_ns)
            .expect("append");
        if i % 10 == 9 {
            now.mono_ns += 61_000_000_000; // a rotation period passes
        }
        w.seal_due(now).expect("seal_due");
    }
    assert_eq!(w.public_key().0, 5);
    w.close(now).expect("close");
    let keys: Vec<_> = std::fs::read_dir(dir.path().join("keys"))
        .expect("keys dir")
        .collect();
    assert_eq!(keys.len(), 1, "only the current key remains on disk");
    let Verdict::Intact(s) = verdict(dir.path()) else {
        panic!("rotated log failed")
    };
    assert_eq!(s.key_rotations, 4);

    // A batch after the rotation signed by the old key would not verify: swap in an old signature.
    let conn = db(dir.path());
    let last: i64 = conn
        .query_row("SELECT MAX(number) FROM batches", [], |r| r.get(0))
        .expect("max");
    conn.execute("UPDATE batches SET signature = (SELECT signature FROM batches WHERE number = 1) WHERE number = ?1", [last]).expect("update");
    assert_eq!(
        failure(dir.path()),
        (
            Position::Batch(u64::try_from(last).expect("n")),
            Reason::BadSignature
        )
    );
}

#[test]
fn key_files_have_private_modes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = written();
    let keys = dir.path().join("keys");
    assert_eq!(
        std::fs::metadata(&keys).expect("dir").permissions().mode() & 0o777,
        0o700
    );
    for entry in std::fs::read_dir(&keys).expect("read") {
        let mode = entry
            .expect("entry")
            .metadata()
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn pruning_verifies_and_unrecorded_pruning_does_not() {
    let dir = written();
    let mut w = LogWriter::open(dir.path(), common::options(8)).expect("reopen");
    let now = Timestamp::now();
    let pruned = w
        .prune(Some(10_000), None, None, now)
        .expect("prune")
        .expect("something pruned");
    assert!(pruned.records > 0 && pruned.batches > 0);
    w.close(now).expect("close");
    let Verdict::Intact(s) = verdict(dir.path()) else {
        panic!("pruned log failed")
    };
    assert_eq!(s.pruned_before, Some(pruned.up_to_seq + 1));
    assert_eq!(s.epochs, 2);

    // Removing the oldest retained batch by hand is not covered by any Pruned record.
    let conn = db(dir.path());
    let (number, first, count): (i64, i64, i64) = conn
        .query_row(
            "SELECT number, first_seq, count FROM batches ORDER BY number LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("first");
    tamper::edit_rows(&conn, |rows| {
        rows.retain(|r| !(first..first + count).contains(&r.seq))
    });
    conn.execute("DELETE FROM batches WHERE number = ?1", [number])
        .expect("delete");
    assert_eq!(
        failure(dir.path()),
        (
            Position::Seq(u64::try_from(first + count - 1).expect("seq")),
            Reason::Deleted
        )
    );
}

#[test]
fn epochs_say_how_the_previous_one_ended() {
    use sensor_log::{Body, EndReason};
    use sensor_store::Filter;
    let dir = tempfile::tempdir().expect("tempdir");
    let boot = dir.path().join("boot_id");
    std::fs::write(&boot, "boot-a\n").expect("boot id");
    let mut opts = common::options(8);
    opts.boot_id_path = boot.clone();
    LogWriter::open(dir.path(), opts.clone())
        .expect("first")
        .close(Timestamp::now())
        .expect("close"); // First, then clean
    LogWriter::open(dir.path(), opts.clone()).expect("second"); // dropped without close: crash
    LogWriter::open(dir.path(), opts.clone())
        .expect("third")
        .close(Timestamp::now())
        .expect("close");
    std::fs::write(&boot, "boot-b\n").expect("boot id");
    LogWriter::open(dir.path(), opts)
        .expect("fourth")
        .close(Timestamp::now())
        .expect("close");

    let store = Store::open_read_only(dir.path()).expect("store");
    let mut reasons = Vec::new();
    let filter = Filter {
        kinds: vec!["epoch_start".to_string()],
        ..Filter::default()
    };
    store
        .query(&filter, |r| {
            if let Body::EpochStart(s) = r.body {
                reasons.push(s.reason);
            }
            Ok(true)
        })
        .expect("query");
    assert_eq!(
        reasons,
        [
            EndReason::First,
            EndReason::CleanStop,
            EndReason::Crash,
            EndReason::Reboot
        ]
    );
    assert!(matches!(verify(&store, None).expect("verify"), Verdict::Intact(s) if s.epochs == 4));
}

/// The rotation schedule runs on the writer's own clock: a key creation time that root moved
/// into the future in the store does not postpone rotation.
#[test]
fn an_edited_key_creation_time_does_not_postpone_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_log(dir.path(), 3, 8);
    db(dir.path())
        .execute("UPDATE keys SET created_ns = ?1", [i64::MAX])
        .expect("edit created_ns");
    let mut opts = common::options(8);
    opts.key_rotation = Some(Duration::from_secs(60));
    let mut w = LogWriter::open(dir.path(), opts).expect("open");
    let mut now = Timestamp::now();
    now.mono_ns += 61_000_000_000;
    now.wall_ns += 61_000_000_000;
    w.seal_due(now).expect("seal_due");
    assert_eq!(w.public_key().0, 2, "the key rotated on schedule");
}

#[test]
fn emptied_log_is_deleted_from_batch_1() {
    let dir = written();
    db(dir.path())
        .execute_batch("DELETE FROM blocks; DELETE FROM postings; DELETE FROM batches;")
        .expect("empty");
    let store = Store::open_read_only(dir.path()).expect("store");
    let key = store
        .current_key()
        .expect("key")
        .expect("present")
        .public_key;
    let Verdict::Tampered(f) = verify(&store, Some(&key)).expect("verify") else {
        panic!("an emptied log verified")
    };
    assert_eq!(
        (f.position, f.reason),
        (Position::Batch(1), Reason::Deleted)
    );
}

/// The query index is unsigned; `verify` must name every edit that would make a query miss a
/// record or show one twice.
mod index {
    use super::*;
    use sensor_store::Filter;

    fn index_failure(dir: &Path) -> (Position, String) {
        match verdict(dir) {
            Verdict::Tampered(f) if f.reason == Reason::Modified => {
                assert!(f.detail.starts_with("query index: "), "{f}");
                (f.position, f.detail)
            }
            other => panic!("index edit not named: {other:?}"),
        }
    }

    fn path_id(conn: &Connection, path: &str) -> i64 {
        conn.query_row(
            "SELECT id FROM terms WHERE dim = 2 AND value = ?1",
            [path],
            |r| r.get(0),
        )
        .expect("term")
    }

    fn seqs(dir: &Path, filter: &Filter) -> sensor_store::Result<Vec<u64>> {
        let store = Store::open_read_only(dir).expect("store");
        let mut out = Vec::new();
        store.query(filter, |r| {
            out.push(r.header.seq);
            Ok(true)
        })?;
        Ok(out)
    }

    fn shadow() -> Filter {
        Filter {
            path_prefix: Some("/etc/shadow".to_string()),
            ..Filter::default()
        }
    }

    #[test]
    fn deleted_posting_is_named() {
        let dir = written();
        let conn = db(dir.path());
        let before = seqs(dir.path(), &shadow()).expect("query");
        let term = path_id(&conn, "/etc/shadow");
        conn.execute("DELETE FROM postings WHERE batch = 5 AND term = ?1", [term])
            .expect("delete");
        assert!(seqs(dir.path(), &shadow()).expect("query").len() < before.len());
        let (position, detail) = index_failure(dir.path());
        assert_eq!(position, Position::Batch(5));
        assert!(
            detail.contains("no posting lists seq") && detail.contains("/etc/shadow"),
            "{detail}"
        );
    }

    #[test]
    fn changed_term_value_is_named() {
        let dir = written();
        let conn = db(dir.path());
        conn.execute(
            "UPDATE terms SET value = '/etc/shadoW' WHERE dim = 2 AND value = '/etc/shadow'",
            [],
        )
        .expect("update");
        assert!(seqs(dir.path(), &shadow()).expect("query").is_empty());
        let (position, detail) = index_failure(dir.path());
        // Record 3 is the first /etc/shadow read (event 1).
        assert_eq!(position, Position::Seq(3));
        assert!(
            detail.contains("terms table has no path \"/etc/shadow\""),
            "{detail}"
        );
    }

    #[test]
    fn posting_pointing_into_the_next_batch_is_named_and_shows_nothing_twice() {
        let dir = written();
        let conn = db(dir.path());
        let term = path_id(&conn, "/etc/shadow");
        // Batch 5 holds 8 records; offset 8 + 1 names the second record of batch 6, an
        // /etc/shadow read that batch 6's own posting lists too.
        let blob: Vec<u8> = conn
            .query_row(
                "SELECT offsets FROM postings WHERE batch = 5 AND term = ?1",
                [term],
                |r| r.get(0),
            )
            .expect("posting");
        let mut offsets = Vec::new();
        let mut next = 0u64;
        for b in &blob {
            offsets.push(next + u64::from(*b));
            next = offsets[offsets.len() - 1] + 1;
        }
        let gap = u8::try_from(9 - next).expect("small gap");
        let mut forged = blob.clone();
        forged.push(gap);
        conn.execute(
            "UPDATE postings SET offsets = ?1 WHERE batch = 5 AND term = ?2",
            params![forged, term],
        )
        .expect("update");
        match seqs(dir.path(), &shadow()) {
            Ok(found) => {
                let mut unique = found.clone();
                unique.dedup();
                assert_eq!(found, unique, "a record listed twice");
            }
            Err(e) => assert!(e.to_string().contains("sensorctl verify"), "{e}"),
        }
        let (position, detail) = index_failure(dir.path());
        assert_eq!(position, Position::Batch(5));
        assert!(detail.contains("beyond the batch"), "{detail}");
    }

    #[test]
    fn posting_of_a_batch_the_log_lacks_is_named() {
        for batch in [0, 9999] {
            let dir = written();
            db(dir.path())
                .execute(
                    "INSERT INTO postings (term, batch, offsets) VALUES (1, ?1, x'00')",
                    [batch],
                )
                .expect("insert");
            let (position, detail) = index_failure(dir.path());
            assert_eq!(position, Position::Batch(batch), "{detail}");
            assert!(detail.contains("which the log does not have"), "{detail}");
        }
    }

    #[test]
    fn huge_posting_is_refused_before_decoding() {
        let dir = written();
        let conn = db(dir.path());
        let term = path_id(&conn, "/etc/shadow");
        conn.execute(
            "UPDATE postings SET offsets = zeroblob(8000000) WHERE batch = 5 AND term = ?1",
            [term],
        )
        .expect("update");
        let e = seqs(dir.path(), &shadow()).expect_err("a damaged index is an error");
        assert!(e.to_string().contains("postings of batch 5"), "{e}");
        assert_eq!(index_failure(dir.path()).0, Position::Batch(5));
        // Beyond what any value of the store may be: refused without being read.
        conn.execute(
            "UPDATE postings SET offsets = zeroblob(40000000) WHERE batch = 5 AND term = ?1",
            [term],
        )
        .expect("update");
        let e = seqs(dir.path(), &shadow()).expect_err("a damaged index is an error");
        assert!(e.to_string().contains("40000000 bytes, too large"), "{e}");
        let (position, detail) = index_failure(dir.path());
        assert_eq!(position, Position::Batch(5));
        assert!(detail.contains("40000000 bytes, too large"), "{detail}");
    }

    #[test]
    fn edited_time_range_of_a_batch_is_named() {
        let dir = written();
        let conn = db(dir.path());
        let (min, max): (i64, i64) = conn
            .query_row(
                "SELECT min_wall, max_wall FROM batches WHERE number = 5",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("batch");
        let during = Filter {
            since_ns: Some(u64::try_from(min).expect("ns")),
            until_ns: Some(u64::try_from(max).expect("ns")),
            ..Filter::default()
        };
        assert!(seqs(dir.path(), &during).expect("query").contains(&30));
        // The batch's time range hides the whole batch from a time-bounded query.
        conn.execute("UPDATE batches SET max_wall = 0 WHERE number = 5", [])
            .expect("update");
        assert!(!seqs(dir.path(), &during).expect("query").contains(&30));
        let (position, detail) = index_failure(dir.path());
        assert_eq!(position, Position::Batch(5));
        assert!(detail.contains("max_wall column is 0"), "{detail}");
        conn.execute(
            "UPDATE batches SET max_wall = ?1, min_wall = ?1 + 1 WHERE number = 5",
            [max],
        )
        .expect("update");
        assert!(index_failure(dir.path()).1.contains("min_wall"));
    }

    #[test]
    fn edited_batch_columns_are_named() {
        for (sql, column) in [
            ("UPDATE batches SET count = 0 WHERE number = 6", "count"),
            (
                "UPDATE batches SET first_seq = 50 WHERE number = 6",
                "first_seq",
            ),
            ("UPDATE batches SET epoch = 2 WHERE number = 6", "epoch"),
            ("UPDATE batches SET bytes = 1 WHERE number = 6", "bytes"),
        ] {
            let dir = written();
            db(dir.path()).execute(sql, []).expect(sql);
            let (at, detail) = index_failure(dir.path());
            assert_eq!(at, Position::Batch(6), "{sql}: {detail}");
            assert!(
                detail.contains(&format!("{column} column")),
                "{sql}: {detail}"
            );
        }
    }
}

/// Attacks on the record blocks themselves (store layout 3), beyond editing the records they
/// hold: a block that does not decompress, or decompresses to more than a block may hold,
/// an entry cut short, a block renumbered. `verify` names the first record the damage
/// hides; a query that needs those records stops with an error instead of leaving a gap.
mod blocks {
    use super::*;
    use sensor_store::Filter;

    /// First seq of the block holding record `seq`.
    fn block_of(conn: &Connection, seq: i64) -> i64 {
        conn.query_row(
            "SELECT first_seq FROM blocks WHERE first_seq <= ?1 ORDER BY first_seq DESC LIMIT 1",
            [seq],
            |r| r.get(0),
        )
        .expect("block")
    }

    fn set_block(conn: &Connection, first: i64, data: &[u8]) {
        conn.execute(
            "UPDATE blocks SET data = ?1 WHERE first_seq = ?2",
            params![data, first],
        )
        .expect("update block");
    }

    fn query_all(dir: &Path) -> sensor_store::Result<Vec<u64>> {
        let store = Store::open_read_only(dir).expect("store");
        let mut seqs = Vec::new();
        store.query(&Filter::default(), |r| {
            seqs.push(r.header.seq);
            Ok(true)
        })?;
        Ok(seqs)
    }

    fn at(first: i64) -> Position {
        Position::Seq(u64::try_from(first).expect("seq"))
    }

    #[test]
    fn a_block_that_does_not_decompress_is_named_at_its_first_record() {
        let dir = written();
        let conn = db(dir.path());
        let first = block_of(&conn, 40);
        assert!(first > 1 && first <= 40);
        set_block(&conn, first, b"\x28\xb5\x2f\xfd garbage");
        assert_eq!(failure(dir.path()), (at(first), Reason::Modified));
        let e = query_all(dir.path()).expect_err("a damaged block is an error");
        assert!(
            e.to_string()
                .contains(&format!("the block holding record {first} is damaged")),
            "{e}"
        );
    }

    /// Stored bytes longer than any block are not loaded, and a small frame that would
    /// decompress to 64 MiB is refused at the block limit, not allocated.
    #[test]
    fn oversized_blocks_are_modified_not_loaded() {
        let dir = written();
        let conn = db(dir.path());
        let first = block_of(&conn, 40);
        conn.execute(
            "UPDATE blocks SET data = zeroblob(40000000) WHERE first_seq = ?1",
            [first],
        )
        .expect("update");
        assert_eq!(failure(dir.path()), (at(first), Reason::Modified));

        let dir = written();
        let conn = db(dir.path());
        let mut entry = vec![0u8; 36];
        entry[32..].copy_from_slice(&(64u32 << 20).to_le_bytes());
        entry.resize(36 + (64 << 20), 0);
        set_block(
            &conn,
            first,
            &zstd::bulk::compress(&entry, 1).expect("zstd"),
        );
        assert_eq!(failure(dir.path()), (at(first), Reason::Modified));
    }

    /// The records before the damage still verify; the first one it hides is named.
    #[test]
    fn an_entry_cut_short_is_named_where_it_starts() {
        let dir = written();
        let conn = db(dir.path());
        let first = block_of(&conn, 40);
        let data: Vec<u8> = conn
            .query_row(
                "SELECT data FROM blocks WHERE first_seq = ?1",
                [first],
                |r| r.get(0),
            )
            .expect("block");
        let plain = zstd::bulk::decompress(&data, 1 << 20).expect("decompress");
        let cut = &plain[..plain.len() - 5];
        set_block(&conn, first, &zstd::bulk::compress(cut, 1).expect("zstd"));
        let entries = sensor_store::block::decode(&data).expect("decode").len();
        let last = first + i64::try_from(entries).expect("n") - 1;
        assert_eq!(failure(dir.path()), (at(last), Reason::Modified));
    }

    /// The block's `first_seq` numbers its records, like the row keys it replaced: moved,
    /// its records are missing where they were.
    #[test]
    fn a_renumbered_block_is_named() {
        let dir = written();
        let conn = db(dir.path());
        let first = block_of(&conn, 40);
        conn.execute(
            "UPDATE blocks SET first_seq = first_seq + 1000 WHERE first_seq = ?1",
            [first],
        )
        .expect("update");
        assert_eq!(failure(dir.path()), (at(first), Reason::Deleted));
    }
}

/// The read side refuses a store whose schema is not the one the writer creates, naming the
/// object, before running any of its SQL.
mod schema {
    use super::*;

    fn refused(dir: &Path, object: &str) {
        let e = match Store::open_read_only(dir) {
            Ok(_) => panic!("a store with an edited schema ({object}) was opened"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(&format!("`{object}`")), "{e}");
    }

    #[test]
    fn recursive_view_in_place_of_a_table_is_refused() {
        let dir = written();
        db(dir.path())
            .execute_batch(
                "DROP TABLE postings;
                 CREATE VIEW postings (term, batch, offsets) AS
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n)
                 SELECT 1, i, zeroblob(1000) FROM n;",
            )
            .expect("view");
        refused(dir.path(), "postings");
        // The writer refuses it too, and changes nothing.
        let e = LogWriter::open(dir.path(), common::options(8))
            .err()
            .expect("writer refuses");
        assert!(e.to_string().contains("`postings`"), "{e}");
    }

    #[test]
    fn trigger_extra_index_and_redefined_table_are_refused() {
        for (sql, object) in [
            (
                "CREATE TRIGGER hide AFTER INSERT ON blocks BEGIN DELETE FROM blocks WHERE first_seq = new.first_seq; END",
                "hide",
            ),
            ("CREATE INDEX by_data ON blocks (data)", "by_data"),
            (
                "DROP TABLE meta; CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL, extra)",
                "meta",
            ),
            ("DROP TABLE keys", "keys"),
        ] {
            let dir = written();
            db(dir.path()).execute_batch(sql).expect(sql);
            refused(dir.path(), object);
            let e = LogWriter::open(dir.path(), common::options(8))
                .err()
                .unwrap_or_else(|| panic!("writer opened a store with {sql}"));
            assert!(e.to_string().contains(&format!("`{object}`")), "{e}");
        }
    }
}

/// A record the format refuses (over 1 MiB encoded) is an error for its append alone: the
/// records around it are chained and stored whole, and the log verifies.
#[test]
fn an_event_too_large_to_encode_leaves_the_log_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = LogWriter::open(dir.path(), common::options(8)).expect("open");
    let now = Timestamp::now();
    for i in 0..20 {
        let mut event = common::event(i);
        if i == 10 {
            if let Some(p) = event.process.as_mut() {
                p.cmdline = "x".repeat(2 << 20);
            }
            assert!(w.append(event, now.wall_ns, now.mono_ns).is_err());
            continue;
        }
        w.append(event, now.wall_ns, now.mono_ns).expect("append");
        w.seal_due(now).expect("seal_due");
    }
    w.close(now).expect("close");
    let Verdict::Intact(s) = verdict(dir.path()) else {
        panic!("the log does not verify")
    };
    assert_eq!(s.records, 1 + 19);
}
