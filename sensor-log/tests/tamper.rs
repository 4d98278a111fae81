//! Tampering with a real store written by the LogWriter: `verify` names the position and
//! the reason of the first failure.

mod common;

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection};
use sensor_log::{verify, LogWriter, Position, Reason, Store, Timestamp, Verdict};

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

/// A log of 1 EpochStart + 100 events in batches of 8; returns its directory.
fn written() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_log(dir.path(), 100, 8);
    dir
}

fn db(dir: &Path) -> Connection {
    Connection::open(dir.join("log.db")).expect("open db")
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
    let conn = db(dir.path());
    let mut bytes: Vec<u8> = conn
        .query_row("SELECT bytes FROM records WHERE seq = 40", [], |r| r.get(0))
        .expect("row");
    let last = bytes.len() - 20;
    bytes[last] ^= 0x01;
    conn.execute(
        "UPDATE records SET bytes = ?1 WHERE seq = 40",
        params![bytes],
    )
    .expect("update");
    assert_eq!(failure(dir.path()), (Position::Seq(40), Reason::Modified));
}

#[test]
fn modified_record_and_leaf_is_caught_by_the_batch() {
    let dir = written();
    let conn = db(dir.path());
    let mut bytes: Vec<u8> = conn
        .query_row("SELECT bytes FROM records WHERE seq = 40", [], |r| r.get(0))
        .expect("row");
    let last = bytes.len() - 20;
    bytes[last] ^= 0x01;
    let leaf = sensor_log::chain::leaf_hash(&bytes);
    conn.execute(
        "UPDATE records SET bytes = ?1, leaf = ?2 WHERE seq = 40",
        params![bytes, &leaf[..]],
    )
    .expect("update");
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
    db(dir.path())
        .execute("DELETE FROM records WHERE seq = 50", [])
        .expect("delete");
    assert_eq!(failure(dir.path()), (Position::Seq(50), Reason::Deleted));
}

#[test]
fn swapped_records_are_named() {
    let dir = written();
    let conn = db(dir.path());
    conn.execute_batch(
        "UPDATE records SET seq = -1 WHERE seq = 30;
         UPDATE records SET seq = 30 WHERE seq = 31;
         UPDATE records SET seq = 31 WHERE seq = -1;",
    )
    .expect("swap");
    assert_eq!(failure(dir.path()), (Position::Seq(30), Reason::Reordered));
}

#[test]
fn record_inserted_at_the_end_is_named() {
    let dir = written();
    let conn = db(dir.path());
    conn.execute(
        "INSERT INTO records (seq, epoch, batch, wall_ns, kind, leaf, bytes)
         SELECT seq + 1000, epoch, batch, wall_ns, kind, leaf, bytes FROM records WHERE seq = 20",
        [],
    )
    .expect("insert");
    assert_eq!(failure(dir.path()), (Position::Seq(1020), Reason::Inserted));
}

#[test]
fn record_inserted_in_the_middle_is_named() {
    let dir = written();
    let conn = db(dir.path());
    // Shift records 60.. up by one and forge a record at 60 (a copy of 59 with its seq patched).
    conn.execute_batch(
        "UPDATE records SET seq = -seq - 1 WHERE seq >= 60;
         UPDATE records SET seq = -seq WHERE seq < 0;",
    )
    .expect("shift");
    let mut forged: Vec<u8> = conn
        .query_row("SELECT bytes FROM records WHERE seq = 59", [], |r| r.get(0))
        .expect("row");
    // seq sits after version (2) + host id (16) + epoch (8).
    forged[26..34].copy_from_slice(&60u64.to_le_bytes());
    let leaf = sensor_log::chain::leaf_hash(&forged);
    conn.execute(
        "INSERT INTO records (seq, epoch, batch, wall_ns, kind, leaf, bytes) VALUES (60, 1, 1, 0, 'file_open', ?1, ?2)",
        params![&leaf[..], forged],
    )
    .expect("insert");
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
    conn.execute("DELETE FROM records WHERE batch = 4", [])
        .expect("delete records");
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
        .prune(Some(10_000), None, now)
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
    conn.execute(
        "DELETE FROM records WHERE seq >= ?1 AND seq < ?2",
        [first, first + count],
    )
    .expect("delete");
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
    use sensor_log::{Body, EndReason, Filter};
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
