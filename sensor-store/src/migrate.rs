//! Store layout 2 to 3: the `records` rows moved into record blocks (`block.rs`) when the
//! writer opens a store of layout 2, so an upgraded agent keeps its log.
//!
//! The signed bytes and the kept leaf hashes move unchanged, so a store verifies after the
//! migration exactly when it did before, and a tampered one fails at the same record: a row
//! missing between two seqs starts a new block at the next (the block's `first_seq` keeps
//! the gap), rows filed under different batches go to different blocks, a value that is not
//! a blob (or longer than a record can be) moves as empty bytes, which verify read it as
//! before. Each step moves `STEP_RECORDS` rows in one transaction, deleting them from
//! `records`, so a crash resumes where it stopped; the last drops `records` and sets the
//! layout, and the freed pages go back to the file system.

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection};

use crate::block::BlockEncoder;
use crate::error::Result;
use crate::store::{give_back_free_pages, STORE_LAYOUT};

/// Rows moved per transaction: about 35 MiB of records.
const STEP_RECORDS: i64 = 65_536;

/// Migrates the store; returns the number of records moved.
pub(crate) fn layout_2_to_3(conn: &mut Connection, blocks_table: &str) -> Result<u64> {
    conn.execute_batch(blocks_table)?;
    let mut encoder = BlockEncoder::new()?;
    let mut moved = 0;
    loop {
        let tx = conn.transaction()?;
        let mut last_seq = None;
        {
            let mut rows = tx.prepare_cached(
                "SELECT seq, batch, leaf, bytes FROM records ORDER BY seq LIMIT ?1",
            )?;
            let mut rows = rows.query([STEP_RECORDS])?;
            let mut insert =
                tx.prepare_cached("INSERT INTO blocks (first_seq, data) VALUES (?1, ?2)")?;
            // The block being built: its first seq, and the seq and batch of its last row.
            let mut open: Option<(i64, i64, Option<i64>)> = None;
            while let Some(row) = rows.next()? {
                let seq: i64 = row.get(0)?;
                let batch = match row.get_ref(1)? {
                    ValueRef::Integer(b) => Some(b),
                    _ => None,
                };
                let mut leaf = [0; 32];
                if let ValueRef::Blob(kept) = row.get_ref(2)? {
                    let n = kept.len().min(32);
                    leaf[..n].copy_from_slice(&kept[..n]);
                }
                let bytes = match row.get_ref(3)? {
                    ValueRef::Blob(b) if b.len() <= sensor_log::record::MAX_ENCODED_BYTES => b,
                    _ => &[],
                };
                let joins = open.is_some_and(|(_, last, last_batch)| {
                    last.checked_add(1) == Some(seq)
                        && last_batch == batch
                        && encoder.fits(bytes.len())
                });
                if !joins {
                    if let Some((first, ..)) = open {
                        insert.execute(params![first, encoder.finish()?])?;
                    }
                    open = Some((seq, seq, batch));
                }
                encoder.push(&leaf, bytes)?;
                if let Some(o) = open.as_mut() {
                    (o.1, o.2) = (seq, batch);
                }
                last_seq = Some(seq);
                moved += 1;
            }
            if let Some((first, ..)) = open {
                insert.execute(params![first, encoder.finish()?])?;
            }
        }
        match last_seq {
            Some(last) => {
                tx.execute("DELETE FROM records WHERE seq <= ?1", [last])?;
                tx.commit()?;
            }
            None => {
                tx.execute_batch(&format!(
                    "DROP TABLE records; PRAGMA user_version = {STORE_LAYOUT};"
                ))?;
                tx.commit()?;
                give_back_free_pages(conn, None)?;
                return Ok(moved);
            }
        }
    }
}
