//! The newest TPM boot cycle's anchoring trail read straight from the store: the whole
//! cycle, every epoch of the current boot, without verifying signatures (`verify` does that).

use sensor_log::anchor::{cycle_of, TrailBuilder};
use sensor_log::batch::{self, BatchHeader};
use sensor_log::record::{self, Body, Record, TpmEntry, BODY_TAG_TPM};
use sensor_log::AnchorTrail;

use crate::block::Block;
use crate::error::Result;
use crate::records::{self, Cursor};
use crate::store::{to_i64, Store};

impl Store {
    /// The newest TPM boot cycle's anchoring trail, for the agent's start check (a full
    /// verification would cost minutes on a large log): the newest
    /// anchored header names the cycle, the headers are read back to the first that names it,
    /// then forwards from there with the cycle's TPM entries. Headers are decoded and hashed,
    /// nothing is verified (`verify` does that), and only records whose body tag is a TPM
    /// entry's are decoded; a record that does not decode is skipped, which can only hide a
    /// base and so make the check stricter (replay from an earlier base, or none). Cost: one
    /// pass over the cycle's headers and one over its record blocks; 40 bytes per batch of
    /// the cycle in memory.
    pub fn newest_anchor_trail(&self) -> Result<AnchorTrail> {
        let Some(first) = newest_cycle_start(self)? else {
            return Ok(AnchorTrail {
                last_batch: self.last_batch()?.map_or(0, |b| b.number),
                ..AnchorTrail::default()
            });
        };
        let mut builder = TrailBuilder::default();
        let mut batches = self
            .conn
            .prepare("SELECT number, header FROM batches WHERE number >= ?1 ORDER BY number")?;
        let mut records = records::prepare(&self.conn, false)?;
        let mut records = Cursor::new(
            &self.conn,
            &mut records,
            Block::new()?,
            (first.1, u64::MAX),
            false,
        )?;
        let mut batch_rows = batches.query([to_i64(first.0)?])?;
        let mut entry = next_entry(&mut records)?;
        while let Some(r) = batch_rows.next()? {
            let bytes: Vec<u8> = r.get(1)?;
            let header = BatchHeader::decode(&bytes)?;
            builder.header(
                header.number,
                &batch::digest(&bytes),
                header.anchor.as_ref(),
            );
            let end = header.first_seq.saturating_add(header.count);
            while let Some((seq, e)) = entry.take() {
                if seq >= end {
                    entry = Some((seq, e));
                    break;
                }
                builder.entry(seq, &e);
                entry = next_entry(&mut records)?;
            }
        }
        Ok(builder.finish())
    }
}

/// The first batch (number, first seq) of the newest TPM boot cycle a header names, read
/// backwards from the newest batch; `None` when no header has an anchor.
fn newest_cycle_start(store: &Store) -> Result<Option<(u64, u64)>> {
    let mut stmt = store
        .conn
        .prepare("SELECT header FROM batches ORDER BY number DESC")?;
    let mut rows = stmt.query([])?;
    let mut cycle = None;
    let mut first = None;
    while let Some(r) = rows.next()? {
        let header = BatchHeader::decode(&r.get::<_, Vec<u8>>(0)?)?;
        match (header.anchor.as_ref().map(cycle_of), cycle) {
            (Some(c), None) => cycle = Some(c),
            (Some(c), Some(newest)) if c != newest => break,
            _ => {}
        }
        if header.anchor.is_some() {
            first = Some((header.number, header.first_seq));
        }
    }
    Ok(first)
}

/// The next TPM entry among `records`, skipping records that do not decode as one.
fn next_entry(records: &mut Cursor<'_>) -> Result<Option<(u64, TpmEntry)>> {
    while let Some(r) = records.next()? {
        let (seq, bytes) = (r.seq, r.bytes.unwrap_or_default());
        if !matches!(record::peek(bytes), Ok((_, BODY_TAG_TPM))) {
            continue;
        }
        if let Ok(Record {
            body: Body::Tpm(entry),
            ..
        }) = Record::decode(bytes)
        {
            return Ok(Some((seq, entry)));
        }
    }
    Ok(None)
}
