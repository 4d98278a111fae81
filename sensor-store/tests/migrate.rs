//! A store of layout 2 (a `records` row per record), as the previous build left it, is
//! migrated to record blocks when the writer opens it: it verifies after exactly when it
//! did before, a tampered one fails at the same record for the same reason, and an
//! interrupted migration resumes. Readers refuse layout 2 until then.

mod common;

use std::path::Path;

use common::{db, written};
use sensor_log::{Position, Reason, Timestamp, Verdict};
use sensor_store::{tamper, verify, Filter, LogWriter, Store};

fn verdict(dir: &Path) -> Verdict {
    verify(&Store::open_read_only(dir).expect("open"), None).expect("verify runs")
}

fn failure(dir: &Path) -> (Position, Reason) {
    match verdict(dir) {
        Verdict::Tampered(f) => (f.position, f.reason),
        Verdict::Intact(s) => panic!("tampering not detected: {s:?}"),
    }
}

fn all_seqs(dir: &Path) -> Vec<u64> {
    let store = Store::open_read_only(dir).expect("open");
    let mut seqs = Vec::new();
    store
        .query(&Filter::default(), |r| {
            seqs.push(r.header.seq);
            Ok(true)
        })
        .expect("query");
    seqs
}

/// Opens and closes the writer on `dir`: what starting the new agent does.
fn migrate(dir: &Path) -> Option<u64> {
    let w = LogWriter::open(dir, common::options(8)).expect("the writer opens layout 2");
    let migrated = w.migrated();
    w.close(Timestamp::now()).expect("close");
    migrated
}

#[test]
fn a_layout_2_store_is_migrated_and_verifies() {
    let dir = written();
    let before = all_seqs(dir.path());
    tamper::to_layout_2(&db(dir.path()), 0);

    let e = Store::open_read_only(dir.path())
        .err()
        .expect("a reader refuses layout 2");
    assert!(
        e.to_string().contains(
            "layout 2, this build reads layout 3; starting the agent of this build migrates it"
        ),
        "{e}"
    );

    assert_eq!(migrate(dir.path()), Some(101));
    // The pages `records` held went back to the file system.
    let free: i64 = db(dir.path())
        .query_row("PRAGMA freelist_count", [], |r| r.get(0))
        .expect("freelist");
    assert_eq!(free, 0);
    let Verdict::Intact(s) = verdict(dir.path()) else {
        panic!("the migrated store does not verify")
    };
    // The 101 records, then the new epoch's start and the clean stop's batch.
    assert_eq!(s.records, 102);
    assert_eq!(s.epochs, 2);
    assert_eq!(all_seqs(dir.path())[..101], before[..]);
    assert_eq!(
        migrate(dir.path()),
        None,
        "a migrated store is not migrated again"
    );
}

#[test]
fn an_interrupted_migration_resumes() {
    let dir = written();
    tamper::to_layout_2(&db(dir.path()), 45);
    assert_eq!(migrate(dir.path()), Some(101 - 44));
    assert!(matches!(verdict(dir.path()), Verdict::Intact(_)));
}

type Attack = fn(&rusqlite::Connection);

/// Each attack made before the migration is named the same after it.
#[test]
fn a_tampered_layout_2_store_fails_at_the_same_record() {
    let attacks: [(&str, Attack); 4] = [
        ("delete", |c| tamper::delete(c, 50)),
        ("swap", |c| tamper::swap(c, 30, 31)),
        ("modify", |c| {
            common::flip_record_bit(c, 40);
        }),
        ("insert", |c| {
            tamper::edit_rows(c, |rows| {
                let mut copy = tamper::row(rows, 20).clone();
                copy.seq += 1000;
                rows.push(copy);
            })
        }),
    ];
    for (name, attack) in attacks {
        let dir = written();
        attack(&db(dir.path()));
        let expected = failure(dir.path());
        tamper::to_layout_2(&db(dir.path()), 0);
        // The writer does not verify what it migrates, nor refuse it: verify's job.
        LogWriter::open(dir.path(), common::options(8)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(failure(dir.path()), expected, "{name}");
    }
}
