//! The outbox hands out each stored batch with exactly its records, as the message that
//! forwards it: a collector's verifier, fed the messages one at a time, accepts an intact log
//! and names the first failure of a tampered one where `verify` of the store does.

mod common;

use common::written;

use std::path::Path;

use sensor_log::forward::BatchMessage;
use sensor_log::{Failure, Position, Reason, Verdict, Verifier};
use sensor_store::{verify, Store};

/// Feeds every batch of the store to a verifier, as a collector receives them.
fn forwarded(dir: &Path) -> Result<u64, Failure> {
    let store = Store::open_read_only(dir).expect("open");
    let first = store.first_batch().expect("read").expect("a batch");
    let last = store.last_batch().expect("read").expect("a batch").number;
    let (_, key) = store.oldest_key().expect("read").expect("key");
    let mut verifier = Verifier::new(key);
    let mut batches = 0;
    for number in first.number..=last {
        let Some(BatchMessage {
            header,
            signature,
            records,
        }) = store.outbox_batch(number).expect("read")
        else {
            return Err(Failure {
                position: Position::Batch(number),
                reason: Reason::Deleted,
                detail: "not in the outbox".into(),
            });
        };
        let records: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        verifier.message(&header, &signature, &records)?;
        batches += 1;
    }
    verifier.end()?;
    Ok(batches)
}

#[test]
fn every_batch_leaves_with_exactly_its_records_and_verifies() {
    let dir = written();
    let store = Store::open_read_only(dir.path()).expect("open");
    let Verdict::Intact(summary) = verify(&store, None).expect("verify") else {
        panic!("not intact")
    };
    assert_eq!(forwarded(dir.path()), Ok(summary.batches));
    let last = store.last_batch().expect("read").expect("batch").number;
    assert_eq!(store.outbox_batch(last + 1).expect("read"), None);
}

#[test]
fn a_tampered_store_fails_at_the_collector_where_verify_says() {
    let dir = written();
    let conn = rusqlite::Connection::open(dir.path().join("log.db")).expect("db");
    sensor_store::tamper::delete(&conn, 40);
    let failure = forwarded(dir.path()).expect_err("a missing record");
    assert_eq!(
        (failure.position, failure.reason),
        (Position::Seq(40), Reason::Deleted)
    );

    let dir = written();
    let conn = rusqlite::Connection::open(dir.path().join("log.db")).expect("db");
    let (first, _) = conn
        .query_row(
            "SELECT first_seq, number FROM batches WHERE first_seq <= 40 AND first_seq + count > 40",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        )
        .expect("batch of 40");
    common::flip_record_bit(&conn, 40);
    let failure = forwarded(dir.path()).expect_err("a modified record");
    assert_eq!(
        (failure.position, failure.reason),
        (Position::Seq(first as u64), Reason::Modified)
    );
}

/// With forwarding on, age never removes a batch no collector acknowledged; the byte limit
/// still does (the disk comes first), and then a `loss` event with source `unforwarded`,
/// chained right after the `pruned` record, counts by kind the records that went before any
/// collector held them. The log still verifies.
#[test]
fn retention_keeps_what_no_collector_acknowledged() {
    use sensor_log::{Body, Record, Timestamp};
    use sensor_store::{LogWriter, WriterOptions};

    let dir = written();
    let mut w = LogWriter::open(
        dir.path(),
        WriterOptions {
            batch_max_records: 8,
            batch_interval: std::time::Duration::from_secs(3600),
            ..WriterOptions::default()
        },
    )
    .expect("reopen");
    let now = Timestamp::now();
    let later = Timestamp {
        wall_ns: now.wall_ns + 86_400_000_000_000,
        mono_ns: now.mono_ns,
    };
    let day = Some(std::time::Duration::from_secs(3600));
    let pruned = w
        .prune(None, day, Some(5), later)
        .expect("prune")
        .expect("pruned");
    assert_eq!(pruned.batches, 4, "only batches 1 to 4 were acknowledged");

    let unforwarded = |dir: &Path| -> Vec<u64> {
        let store = Store::open_read_only(dir).expect("store");
        let last = store.last_batch().expect("read").expect("a batch").number;
        let batch = store.outbox_batch(last).expect("read").expect("held");
        batch
            .records
            .iter()
            .filter_map(|r| match Record::decode(r).expect("decodes").body {
                Body::Event(e) => e
                    .loss
                    .filter(|l| l.source == "unforwarded")
                    .map(|l| l.total),
                _ => None,
            })
            .collect()
    };
    assert!(
        unforwarded(dir.path()).is_empty(),
        "age removed nothing unforwarded"
    );

    let store = Store::open_read_only(dir.path()).expect("store");
    let first = store.first_batch().expect("read").expect("a batch");
    assert_eq!(first.number, 5);
    let before = store.record_count().expect("count");
    drop(store);
    let pruned = w
        .prune(Some(1), day, Some(5), later)
        .expect("prune")
        .expect("pruned");
    assert!(pruned.batches > 0);
    assert_eq!(
        unforwarded(dir.path()),
        vec![pruned.records],
        "the loss counts every record removed"
    );
    assert!(before > pruned.records);
    w.close(later).expect("close");
    let store = Store::open_read_only(dir.path()).expect("store");
    assert!(matches!(
        verify(&store, None).expect("verify"),
        Verdict::Intact(_)
    ));
}
