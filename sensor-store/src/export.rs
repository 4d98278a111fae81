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

use crate::block::Block;
use crate::error::{Error, Result};
use crate::records::{self, Cursor};
use crate::store::Store;

/// What an export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exported {
    pub batches: u64,
    pub records: u64,
}

impl Store {
    /// Writes every batch and record to `out` in one read snapshot, each batch followed by
    /// the records before the end of its row's seq range (`first_seq + count`; records after
    /// the last batch come last), with the public key of the oldest batch's key epoch. A
    /// damaged block's records are exported up to the damage, exported as an empty record.
    pub fn export<W: Write>(&self, out: W) -> Result<(W, Exported)> {
        let snapshot = self.conn.unchecked_transaction()?;
        let key = self.oldest_key()?;
        let io = |e| Error::Io {
            path: "batch file".into(),
            source: e,
        };
        let mut file = BatchFileWriter::start(out, key.as_slice()).map_err(io)?;
        let mut batches = self.conn.prepare(
            "SELECT number, header, signature, first_seq + count FROM batches ORDER BY number",
        )?;
        let mut records = records::prepare(&self.conn, false)?;
        let mut records = Cursor::new(
            &self.conn,
            &mut records,
            Block::new()?,
            (0, u64::MAX),
            false,
        )?;
        let mut batch_rows = batches.query([])?;
        let mut exported = Exported::default();
        while let Some(b) = batch_rows.next()? {
            file.batch(blob(b.get_ref(1)?), blob(b.get_ref(2)?))
                .map_err(io)?;
            exported.batches += 1;
            // An edited seq range only moves records in the file, never drops them.
            let end = match b.get_ref(3)? {
                ValueRef::Integer(end) => u64::try_from(end).unwrap_or(0),
                _ => 0,
            };
            while let Some(r) = records.peek()? {
                if r.seq >= end {
                    break;
                }
                file.record(r.bytes.unwrap_or_default()).map_err(io)?;
                exported.records += 1;
                records.advance();
            }
        }
        while let Some(r) = records.peek()? {
            file.record(r.bytes.unwrap_or_default()).map_err(io)?;
            exported.records += 1;
            records.advance();
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
        let mut records = Vec::new();
        if let Some(last) = end.checked_sub(1).filter(|&last| last >= first) {
            let mut stmt = records::prepare(&self.conn, false)?;
            let mut cursor =
                Cursor::new(&self.conn, &mut stmt, Block::new()?, (first, last), false)?;
            // A damaged block forwards as an empty record: the collector rejects the batch
            // and says where.
            while let Some(r) = cursor.next()? {
                records.push(r.bytes.unwrap_or_default().to_vec());
            }
        }
        drop(snapshot);
        Ok(Some(BatchMessage {
            header: batch.header_bytes,
            signature: batch.signature,
            records,
        }))
    }
}
