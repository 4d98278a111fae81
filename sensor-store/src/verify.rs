//! `verify` over the agent's store: the store as a `BatchSource` for the format crate's
//! verifier, plus the checks of what the store keeps beside the signed bytes (block first seqs, leaf
//! hashes, the batches row's columns, the query index), so an edited copy is found as surely
//! as an edited record.

use ed25519_dalek::VerifyingKey;
use rusqlite::types::ValueRef;
use sensor_log::record::MAX_ENCODED_BYTES;
use sensor_log::source::{BatchSource, SourceBatch, SourceRecord, VerifiedBatch};
use sensor_log::{BatchHeader, Failure, Position, Reason, Verdict};

use crate::block::Block;
use crate::error::Error;
use crate::index_check::{self, Feeder};
use crate::records::{self, Cursor};
use crate::store::{to_u64, Store};

/// Verifies the whole store. `Err` only for I/O or store errors; tampering is a `Verdict`.
///
/// The query index is checked against the records on a second thread
/// (`index_check::check`) with its own read connection for the index, fed by the walk over
/// signatures, chain and Merkle roots with the bytes of each record it verified. A failure
/// of the walk is reported before one of the index.
pub fn verify(store: &Store, pinned: Option<&VerifyingKey>) -> Result<Verdict, Error> {
    // The walk's snapshot begins here; the check's own connection opens after it.
    let snapshot = store.conn.unchecked_transaction()?;
    store
        .conn
        .query_row("SELECT COUNT(*) FROM meta", [], |_| Ok(()))?;
    let index_store = Store::open_read_only(store.state_dir())?;
    index_store.cache_for_verify()?;
    store.cache_for_verify()?;
    let verdict = std::thread::scope(|scope| {
        let (feeder, fed) = index_check::channels();
        let index = scope.spawn(move || index_check::check(&index_store, fed));
        // Ends by dropping the feeder, which ends the check once it has caught up.
        let walk = StoreSource::walk(store, feeder, pinned);
        let index = index
            .join()
            .unwrap_or_else(|_| Err(Error::malformed("query index", "its check panicked")));
        match walk? {
            Verdict::Intact(summary) => Ok(match index? {
                Some(failure) => Verdict::Tampered(failure),
                None => Verdict::Intact(summary),
            }),
            tampered => Ok(tampered),
        }
    });
    drop(snapshot);
    store.cache_for_queries()?;
    verdict
}

/// The unsigned columns of a `batches` row, compared with what its signed header and records
/// say: queries select batches by `first_seq`, `count`, `min_wall` and `max_wall`, retention
/// sums `bytes`.
const BATCH_COLUMNS: [&str; 7] = [
    "epoch",
    "first_seq",
    "count",
    "bytes",
    "wall_ns",
    "min_wall",
    "max_wall",
];

/// The columns of the current batch row in `BATCH_COLUMNS` order (`None`: not an integer).
type BatchColumns = [Option<i64>; 7];

struct StoreSource<'s> {
    store: &'s Store,
    batches: rusqlite::Rows<'s>,
    records: Cursor<'s>,
    columns: BatchColumns,
    feeder: Feeder,
}

impl<'s> StoreSource<'s> {
    fn walk(
        store: &'s Store,
        feeder: Feeder,
        pinned: Option<&VerifyingKey>,
    ) -> Result<Verdict, Error> {
        // A header, signature or record longer than the format allows is not loaded: it
        // reads as empty (modified, or a bad signature).
        let mut batches = store.conn.prepare(&format!(
            "SELECT number,
                    CASE WHEN octet_length(header) <= {MAX_ENCODED_BYTES} THEN header END,
                    CASE WHEN octet_length(signature) <= 64 THEN signature END,
                    {}
             FROM batches ORDER BY number",
            BATCH_COLUMNS.join(", ")
        ))?;
        let mut records = records::prepare(&store.conn, false)?;
        let mut source = StoreSource {
            store,
            batches: batches.query([])?,
            records: Cursor::new(
                &store.conn,
                &mut records,
                Block::new()?,
                (0, u64::MAX),
                false,
            )?,
            columns: [None; 7],
            feeder,
        };
        sensor_log::verify(&mut source, pinned)
    }
}

/// A blob column; any other type (a tampered row) reads as empty, which no leaf matches.
fn blob<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> Result<&'r [u8], Error> {
    Ok(match row.get_ref(i)? {
        ValueRef::Blob(b) => b,
        _ => &[],
    })
}

/// An integer column; any other type (a tampered row) reads as `None`.
fn integer(row: &rusqlite::Row<'_>, i: usize) -> Result<Option<i64>, Error> {
    Ok(match row.get_ref(i)? {
        ValueRef::Integer(v) => Some(v),
        _ => None,
    })
}

fn refill(buffer: &mut Vec<u8>, bytes: &[u8]) {
    buffer.clear();
    buffer.extend_from_slice(bytes);
}

impl BatchSource for StoreSource<'_> {
    type Error = Error;

    fn next_batch(&mut self, batch: &mut SourceBatch) -> Result<bool, Error> {
        let Some(b) = self.batches.next()? else {
            return Ok(false);
        };
        batch.number = Some(to_u64(b.get(0)?, "batch number")?);
        refill(&mut batch.header, blob(b, 1)?);
        refill(&mut batch.signature, blob(b, 2)?);
        for (column, i) in self.columns.iter_mut().zip(3..) {
            *column = integer(b, i)?;
        }
        Ok(true)
    }

    fn next_record(&mut self, record: &mut SourceRecord) -> Result<bool, Error> {
        let Some(entry) = self.records.next()? else {
            return Ok(false);
        };
        record.seq = Some(entry.seq);
        match entry.bytes {
            Ok(bytes) => {
                refill(record.leaf.get_or_insert_with(Vec::new), entry.leaf);
                refill(&mut record.bytes, bytes);
            }
            // A damaged block reads as one record that does not decode, where its next
            // record should be.
            Err(_) => {
                record.leaf = None;
                record.bytes.clear();
            }
        }
        Ok(true)
    }

    fn public_key(&mut self, key_epoch: u64) -> Result<Option<VerifyingKey>, Error> {
        self.store.public_key(key_epoch)
    }

    fn batch_started(&mut self, header: &BatchHeader) {
        self.feeder
            .begin(header.number, header.first_seq, header.count);
    }

    fn record_verified(&mut self, seq: u64, bytes: &[u8]) {
        self.feeder.record(seq, bytes);
    }

    fn batch_verified(&mut self, batch: &VerifiedBatch<'_>) -> Result<Option<Failure>, Error> {
        let header = batch.header;
        let signed = [
            header.epoch,
            header.first_seq,
            header.count,
            batch.record_bytes,
            header.wall_ns,
            batch.min_wall,
            batch.max_wall,
        ];
        for ((name, stored), signed) in BATCH_COLUMNS.into_iter().zip(self.columns).zip(signed) {
            if stored.and_then(|v| u64::try_from(v).ok()) != Some(signed) {
                return Ok(Some(Failure {
                    position: Position::Batch(header.number),
                    reason: Reason::Modified,
                    detail: format!(
                        "query index: the batches row's {name} column is {}, its signed header and records say {signed}",
                        stored.map_or_else(|| "not an integer".to_string(), |v| v.to_string())
                    ),
                }));
            }
        }
        self.feeder.end();
        Ok(None)
    }
}
