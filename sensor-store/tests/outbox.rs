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
    conn.execute("DELETE FROM records WHERE seq = 40", [])
        .expect("delete");
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
