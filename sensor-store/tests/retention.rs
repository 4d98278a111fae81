//! Retention gives the pages of what it pruned back to the file system (the chain stage
//! calls `give_back_free_pages` after each `prune`), so the store's file shrinks with the
//! log instead of staying at its largest size.

mod common;

use std::path::Path;

use common::{db, write_log};
use sensor_log::{Timestamp, Verdict};
use sensor_store::{verify, LogWriter, Store};

fn free_pages(dir: &Path) -> i64 {
    db(dir)
        .query_row("PRAGMA freelist_count", [], |r| r.get(0))
        .expect("freelist")
}

fn file_bytes(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("log.db")).expect("log.db").len()
}

#[test]
fn pruning_shrinks_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 30_000, 512);
    let written = file_bytes(dir.path());
    assert_eq!(free_pages(dir.path()), 0);

    let mut w = LogWriter::open(dir.path(), common::options(512)).expect("reopen");
    let now = Timestamp::now();
    let pruned = w
        .prune(Some(200_000), None, None, now)
        .expect("prune")
        .expect("something pruned");
    w.give_back_free_pages().expect("give back");
    w.close(now).expect("close");
    assert!(pruned.records > 25_000, "{pruned:?}");

    assert_eq!(
        free_pages(dir.path()),
        0,
        "the pruned blocks' pages are still in the file"
    );
    let left = file_bytes(dir.path());
    assert!(
        left * 2 < written,
        "the file kept {left} of {written} bytes after pruning most of the log"
    );
    let Verdict::Intact(s) =
        verify(&Store::open_read_only(dir.path()).expect("open"), None).expect("verify runs")
    else {
        panic!("the pruned store does not verify")
    };
    assert_eq!(s.pruned_before, Some(pruned.up_to_seq + 1));
}
