//! The store's signed bytes handed out exactly as stored: to a batch file for `sensorctl
//! export` (`sensor_log::batch_file`), so the log can be kept off the host and verified
//! anywhere by the same verifier, and batch by batch as forwarding messages for a collector
//! (the outbox). Nothing is checked here: a tampered store hands out tampered bytes, and
//! their verification says where.

use std::io::Write;

use ed25519_dalek::VerifyingKey;
use rusqlite::types::ValueRef;
use sensor_log::batch_file::BatchFileWriter;
use sensor_log::forward::BatchMessage;

use crate::error::{Error, Result};
use crate::store::{to_i64, to_u64, Store};

/// What an export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exported {
    pub batches: u64,
    pub records: u64,
}

impl Store {
    /// Writes every batch and record to `out` in one read snapshot, each batch followed by
    /// the records its row's `batch` column files under it (records no batch row claims come
    /// last), with the public key of the oldest batch's key epoch.
    pub fn export<W: Write>(&self, out: W) -> Result<(W, Exported)> {
        let snapshot = self.conn.unchecked_transaction()?;
        let key = self.oldest_key()?;
        let io = |e| Error::Io {
            path: "batch file".into(),
            source: e,
        };
        let mut file = BatchFileWriter::start(out, key.as_slice()).map_err(io)?;
        let mut batches = self
            .conn
            .prepare("SELECT number, header, signature FROM batches ORDER BY number")?;
        let mut records = self
            .conn
            .prepare("SELECT batch, bytes FROM records ORDER BY seq")?;
        let mut batch_rows = batches.query([])?;
        let mut record_rows = records.query([])?;
        let mut exported = Exported::default();
        let mut pending = record_rows.next()?;
        while let Some(b) = batch_rows.next()? {
            let number = to_u64(b.get(0)?, "batch number")?;
            file.batch(blob(b.get_ref(1)?), blob(b.get_ref(2)?))
                .map_err(io)?;
            exported.batches += 1;
            while let Some(r) = pending {
                // An edited batch column only moves the record in the file, never drops it.
                let filed = match r.get_ref(0)? {
                    ValueRef::Integer(v) => v,
                    _ => i64::MIN,
                };
                if filed > i64::try_from(number).unwrap_or(i64::MAX) {
                    break;
                }
                file.record(blob(r.get_ref(1)?)).map_err(io)?;
                exported.records += 1;
                pending = record_rows.next()?;
            }
        }
        while let Some(r) = pending {
            file.record(blob(r.get_ref(1)?)).map_err(io)?;
            exported.records += 1;
            pending = record_rows.next()?;
        }
        let out = file.finish().map_err(io)?;
        drop(snapshot);
        Ok((out, exported))
    }
}

/// A blob column as stored; any other type (a tampered row) exports as empty bytes.
fn blob(value: ValueRef<'_>) -> &[u8] {
    match value {
        ValueRef::Blob(b) => b,
        _ => &[],
    }
}

impl Store {
    /// The key epoch of the oldest retained batch and the public key the store records for
    /// it: what a verifier of the retained log starts from (a batch file carries it; a
    /// collector enrolls it).
    pub fn oldest_key(&self) -> Result<Option<(u64, VerifyingKey)>> {
        let Some(first) = self.first_batch()? else {
            return Ok(None);
        };
        let epoch = first.header.key_epoch;
        Ok(self.public_key(epoch)?.map(|key| (epoch, key)))
    }

    /// Batch `number` with the records its signed header covers (`first_seq` and `count`), as
    /// the message that forwards it; `None` when the store does not hold it. One read
    /// snapshot, so a batch being pruned meanwhile is either whole or absent.
    pub fn outbox_batch(&self, number: u64) -> Result<Option<BatchMessage>> {
        let snapshot = self.conn.unchecked_transaction()?;
        let Some(batch) = self.batch(number)? else {
            return Ok(None);
        };
        let first = batch.header.first_seq;
        let end = first.saturating_add(batch.header.count);
        let mut records = self.conn.prepare_cached(
            "SELECT bytes FROM records WHERE seq >= ?1 AND seq < ?2 ORDER BY seq",
        )?;
        let records = records
            .query_map([to_i64(first)?, to_i64(end)?], |r| {
                Ok(blob(r.get_ref(0)?).to_vec())
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(snapshot);
        Ok(Some(BatchMessage {
            header: batch.header_bytes,
            signature: batch.signature,
            records,
        }))
    }
}
