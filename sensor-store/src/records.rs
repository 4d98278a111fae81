//! Reading records back from the `blocks` table (`block.rs`): in sequence order over a range
//! (verify, export, the outbox, queries without terms) and one by one (queries by term).
//!
//! A block's `first_seq` column numbers its records (`first_seq + i` for entry `i`); like
//! the row key it replaces, it is an unsigned copy, checked by `verify` against the seq each
//! record's signed bytes carry.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension};

use crate::block::{Block, MAX_STORED_BYTES};
use crate::error::{Error, Result};
use crate::store::{to_i64, to_u64};

/// A block's columns as `load` reads them: first seq, stored bytes (NULL when longer than a
/// block can be, never loaded).
fn columns() -> String {
    format!("first_seq, CASE WHEN octet_length(data) <= {MAX_STORED_BYTES} THEN data END")
}

/// The block holding record `?1`: the one with the greatest `first_seq` at or below it.
const HOLDING: &str = "FROM blocks WHERE first_seq <= ?1 ORDER BY first_seq DESC LIMIT 1";

/// Selects the blocks whose `first_seq` is in `?1..=?2`.
fn blocks_sql(newest_first: bool) -> String {
    format!(
        "SELECT {} FROM blocks WHERE first_seq >= ?1 AND first_seq <= ?2 ORDER BY first_seq {}",
        columns(),
        if newest_first { "DESC" } else { "ASC" }
    )
}

/// Decodes the block of `row` (`columns`) into `block`; returns its first seq.
fn load(block: &mut Block, row: &rusqlite::Row<'_>) -> Result<u64> {
    match row.get_ref(1)? {
        ValueRef::Blob(b) => block.decode(b),
        _ => block.unreadable("not a blob, or longer than a block can be"),
    };
    to_u64(row.get(0)?, "block first seq")
}

/// A record as a block holds it.
pub(crate) struct Entry<'a> {
    pub(crate) seq: u64,
    /// The leaf hash kept beside the record.
    pub(crate) leaf: &'a [u8],
    /// The record's bytes, or what is wrong with the block from here on: its entries end
    /// with the damage (one such entry, after the entries before it).
    pub(crate) bytes: std::result::Result<&'a [u8], &'a str>,
}

/// The records of the blocks between two seqs, in order, block by block.
pub(crate) struct Cursor<'s> {
    rows: rusqlite::Rows<'s>,
    block: Block,
    first: u64,
    /// Entries of the current block still to hand out, as positions: `len` stands for the
    /// damage entry.
    order: std::ops::Range<usize>,
    range: (u64, u64),
    newest_first: bool,
    /// The entry `peek` and `next` hand out, and whether it was taken.
    head: Option<usize>,
    taken: bool,
}

/// The statement a `Cursor` reads with; prepared by the caller, who keeps it alive.
pub(crate) fn prepare(
    conn: &Connection,
    newest_first: bool,
) -> Result<rusqlite::CachedStatement<'_>> {
    Ok(conn.prepare_cached(&blocks_sql(newest_first))?)
}

impl<'s> Cursor<'s> {
    /// The records with seq in `lo..=hi` of `conn`'s blocks, from `stmt` (`prepare`),
    /// decoded into `block` (`into_block` gives it back for the next range).
    pub(crate) fn new(
        conn: &Connection,
        stmt: &'s mut rusqlite::CachedStatement<'_>,
        block: Block,
        (lo, hi): (u64, u64),
        newest_first: bool,
    ) -> Result<Cursor<'s>> {
        // The block holding `lo` may begin before it.
        let start: Option<i64> = conn
            .query_row(&format!("SELECT first_seq {HOLDING}"), [to_i64(lo)?], |r| {
                r.get(0)
            })
            .optional()?;
        let start = start.unwrap_or(i64::MIN);
        Ok(Cursor {
            rows: stmt.query([start, to_i64(hi.min(i64::MAX as u64))?])?,
            block,
            first: 0,
            order: 0..0,
            range: (lo, hi),
            newest_first,
            head: None,
            taken: false,
        })
    }

    pub(crate) fn into_block(self) -> Block {
        self.block
    }

    /// The next record in the range, `None` after the last.
    pub(crate) fn next(&mut self) -> Result<Option<Entry<'_>>> {
        self.load_head()?;
        self.taken = true;
        Ok(self.head.map(|i| self.entry(i)))
    }

    /// The next record without taking it: the next `peek` or `next` sees it again until
    /// `advance`.
    pub(crate) fn peek(&mut self) -> Result<Option<Entry<'_>>> {
        self.load_head()?;
        Ok(self.head.map(|i| self.entry(i)))
    }

    pub(crate) fn advance(&mut self) {
        self.taken = true;
    }

    fn entry(&self, i: usize) -> Entry<'_> {
        let (leaf, bytes) = match self.block.entry(i) {
            Some((leaf, bytes)) => (leaf, Ok(bytes)),
            None => (&[][..], Err(self.block.damage().unwrap_or("damaged"))),
        };
        Entry {
            seq: self.first.saturating_add(i as u64),
            leaf,
            bytes,
        }
    }

    /// Makes `head` the next entry in the range (`None` after the last).
    fn load_head(&mut self) -> Result<()> {
        if self.taken {
            self.head = None;
            self.taken = false;
        }
        while self.head.is_none() {
            let next = if self.newest_first {
                self.order.next_back()
            } else {
                self.order.next()
            };
            if let Some(i) = next {
                let seq = self.first.saturating_add(i as u64);
                let is_damage = i == self.block.len();
                // Damage at or before the range's end hides records the range asks for.
                if seq <= self.range.1 && (is_damage || seq >= self.range.0) {
                    self.head = Some(i);
                }
                continue;
            }
            let Some(row) = self.rows.next()? else {
                return Ok(());
            };
            self.first = load(&mut self.block, row)?;
            self.order = 0..self.block.len() + usize::from(self.block.damage().is_some());
        }
        Ok(())
    }
}

/// Point reads for queries by term: the block last read stays decoded, so the matches in a
/// block cost one read and one decompression.
pub(crate) struct PointReader {
    block: Block,
    first: Option<u64>,
}

impl PointReader {
    pub(crate) fn new() -> Result<PointReader> {
        Ok(PointReader {
            block: Block::new()?,
            first: None,
        })
    }

    /// Record `seq`'s bytes; `None` when no block holds it. A damaged block where the record
    /// should be is an error.
    pub(crate) fn get(&mut self, conn: &Connection, seq: u64) -> Result<Option<&[u8]>> {
        let cached = self
            .first
            .and_then(|first| seq.checked_sub(first))
            .filter(|&i| i < self.block.len() as u64);
        let i = match cached {
            Some(i) => i,
            None => {
                let mut stmt = conn.prepare_cached(&format!("SELECT {} {HOLDING}", columns()))?;
                let mut rows = stmt.query([to_i64(seq)?])?;
                let Some(row) = rows.next()? else {
                    return Ok(None);
                };
                // Whatever the block held is gone from here on.
                self.first = None;
                let first = load(&mut self.block, row)?;
                self.first = Some(first);
                seq - first
            }
        };
        let i = usize::try_from(i).unwrap_or(usize::MAX);
        match (self.block.entry(i), self.block.damage()) {
            (Some((_, bytes)), _) => Ok(Some(bytes)),
            (None, Some(damage)) => Err(damaged(seq, damage)),
            (None, None) => Ok(None),
        }
    }
}

/// A block that does not decode where a reader needs its records: the answer would not be
/// complete, so the reader stops.
pub(crate) fn damaged(seq: u64, damage: &str) -> Error {
    Error::malformed(
        "record block",
        format!("the block holding record {seq} is damaged ({damage}); run `sensorctl verify`"),
    )
}
