//! The query index: a term dictionary and per-batch posting lists.
//!
//! Instead of one secondary B-tree entry per record and column (six indexes, each written on
//! every insert, which dominated the durable path), every batch writes one `postings` row per
//! distinct term it contains: `(term, batch) -> the record offsets in that batch`. A batch of
//! 1024 events from a handful of processes writes a few dozen small rows instead of 6144 index
//! entries. Terms are the query dimensions (kind, path, exe, user, unit, container, human,
//! pid), each value stored once in `terms` and referred to by its integer id.
//!
//! Like the old index columns, postings are not signed: they only narrow which records a
//! query decodes, and every filter is applied again to the decoded record. A tampered posting
//! can hide a record from a filtered query, never make the output lie (`verify` covers the
//! records themselves).

use std::collections::HashMap;

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{params, OptionalExtension, ToSql, Transaction};

use crate::error::{Error, Result};
use crate::record::Body;

/// Query dimensions (the `terms.dim` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub(crate) enum Dim {
    Kind = 1,
    Path = 2,
    Exe = 3,
    User = 4,
    Unit = 5,
    Container = 6,
    Human = 7,
    Pid = 8,
}

pub(crate) const DIMS: usize = 8;

/// A term value: text for names and paths, an integer for pid and human.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum TermValue {
    Text(String),
    Int(i64),
}

impl ToSql for TermValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            TermValue::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            TermValue::Int(i) => ToSqlOutput::Owned(Value::Integer(*i)),
        })
    }
}

/// Sentinel for "this record has no value in this dimension".
pub(crate) const NO_TERM: u32 = u32::MAX;

/// The terms of one record, as indexes into the writer's local dictionary.
pub(crate) type RecordTerms = [u32; DIMS];

/// The writer's in-memory dictionary: term values to local numbers, and local numbers to the
/// store's term ids once known. Lookups of known values do not allocate.
#[derive(Default)]
pub(crate) struct Dictionary {
    text: [HashMap<String, u32>; DIMS],
    int: [HashMap<i64, u32>; DIMS],
    entries: Vec<Entry>,
}

struct Entry {
    dim: Dim,
    value: TermValue,
    /// The `terms.id` in the store, once a committed transaction has resolved it.
    id: Option<i64>,
}

/// Entries beyond which the dictionary is emptied after a commit (pids are unbounded).
const DICTIONARY_LIMIT: usize = 200_000;

impl Dictionary {
    fn text(&mut self, dim: Dim, value: &str) -> u32 {
        let slot = dim as usize - 1;
        if let Some(&n) = self.text[slot].get(value) {
            return n;
        }
        let n = self.push(dim, TermValue::Text(value.to_string()));
        self.text[slot].insert(value.to_string(), n);
        n
    }

    fn int(&mut self, dim: Dim, value: i64) -> u32 {
        let slot = dim as usize - 1;
        if let Some(&n) = self.int[slot].get(&value) {
            return n;
        }
        let n = self.push(dim, TermValue::Int(value));
        self.int[slot].insert(value, n);
        n
    }

    fn push(&mut self, dim: Dim, value: TermValue) -> u32 {
        let n = u32::try_from(self.entries.len()).unwrap_or(NO_TERM - 1);
        self.entries.push(Entry {
            dim,
            value,
            id: None,
        });
        n
    }

    /// The terms a record is indexed under.
    pub(crate) fn terms_of(&mut self, body: &Body) -> RecordTerms {
        let mut t = [NO_TERM; DIMS];
        t[Dim::Kind as usize - 1] = self.text(Dim::Kind, body.kind_name());
        let Body::Event(e) = body else {
            return t;
        };
        if let Some(p) = &e.process {
            t[Dim::Pid as usize - 1] = self.int(Dim::Pid, i64::from(p.pid));
            t[Dim::Exe as usize - 1] = self.text(Dim::Exe, &p.exe);
        }
        if let Some(i) = &e.identity {
            t[Dim::User as usize - 1] = self.text(Dim::User, &i.user);
            if let Some(unit) = &i.unit {
                t[Dim::Unit as usize - 1] = self.text(Dim::Unit, unit);
            }
            if let Some(c) = &i.container {
                t[Dim::Container as usize - 1] = self.text(Dim::Container, &c.id);
            }
            t[Dim::Human as usize - 1] = self.int(Dim::Human, i64::from(i.human));
        }
        if let Some(f) = &e.file {
            t[Dim::Path as usize - 1] = self.text(Dim::Path, &f.path);
        }
        t
    }

    /// The store id of a local term inside `tx`, creating the `terms` row if needed. New ids
    /// go to `staged`, not into the dictionary, until the transaction commits.
    fn resolve(
        &self,
        tx: &Transaction<'_>,
        local: u32,
        staged: &mut HashMap<u32, i64>,
    ) -> Result<i64> {
        let entry = &self.entries[local as usize];
        if let Some(id) = entry.id.or_else(|| staged.get(&local).copied()) {
            return Ok(id);
        }
        let dim = entry.dim as i64;
        let found: Option<i64> = tx
            .prepare_cached("SELECT id FROM terms WHERE dim = ?1 AND value = ?2")?
            .query_row(params![dim, entry.value], |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                tx.prepare_cached("INSERT INTO terms (dim, value) VALUES (?1, ?2)")?
                    .execute(params![dim, entry.value])?;
                tx.last_insert_rowid()
            }
        };
        staged.insert(local, id);
        Ok(id)
    }

    /// After the transaction that resolved `staged` committed.
    pub(crate) fn committed(&mut self, staged: HashMap<u32, i64>) {
        for (local, id) in staged {
            self.entries[local as usize].id = Some(id);
        }
    }

    /// Forgets everything when it grew too large; only call with no records pending.
    pub(crate) fn trim(&mut self) {
        if self.entries.len() > DICTIONARY_LIMIT {
            *self = Dictionary::default();
        }
    }

    /// Writes the posting rows of one batch whose record `i` has the terms `terms[i]`.
    pub(crate) fn write_postings<'a>(
        &self,
        tx: &Transaction<'_>,
        batch: i64,
        terms: impl Iterator<Item = &'a RecordTerms>,
        staged: &mut HashMap<u32, i64>,
    ) -> Result<()> {
        // Local term -> offsets, in first-seen order (the offsets ascend by construction).
        let mut lists: HashMap<u32, Vec<u32>> = HashMap::new();
        for (offset, t) in terms.enumerate() {
            let offset = u32::try_from(offset).map_err(|_| Error::malformed("batch", "too big"))?;
            for &local in t.iter().filter(|&&l| l != NO_TERM) {
                lists.entry(local).or_default().push(offset);
            }
        }
        let mut insert = tx.prepare_cached(
            "INSERT OR REPLACE INTO postings (term, batch, offsets) VALUES (?1, ?2, ?3)",
        )?;
        let mut blob = Vec::new();
        for (local, offsets) in lists {
            let id = self.resolve(tx, local, staged)?;
            encode_offsets(&offsets, &mut blob);
            insert.execute(params![id, batch, blob])?;
        }
        Ok(())
    }
}

/// Offsets within a batch, ascending, as LEB128 varints of the gaps (first one from 0).
pub(crate) fn encode_offsets(offsets: &[u32], out: &mut Vec<u8>) {
    out.clear();
    let mut prev = 0u32;
    for (i, &o) in offsets.iter().enumerate() {
        let mut gap = if i == 0 { o } else { o - prev - 1 };
        prev = o;
        loop {
            let byte = (gap & 0x7f) as u8;
            gap >>= 7;
            if gap == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
}

/// Inverse of `encode_offsets`; calls `each` with every offset. Malformed input (a tampered
/// row) ends the list early: postings only narrow a query, they are never trusted.
pub(crate) fn decode_offsets(bytes: &[u8], mut each: impl FnMut(u64)) {
    let mut next: u64 = 0;
    let mut gap: u64 = 0;
    let mut shift = 0;
    for &b in bytes {
        if shift > 35 {
            return;
        }
        gap |= u64::from(b & 0x7f) << shift;
        if b & 0x80 != 0 {
            shift += 7;
            continue;
        }
        let offset = next + gap;
        each(offset);
        next = offset + 1;
        gap = 0;
        shift = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip() {
        for offsets in [
            vec![],
            vec![0],
            vec![5],
            vec![0, 1, 2, 3],
            vec![1, 200, 201, 70_000, 1_000_000],
        ] {
            let mut blob = Vec::new();
            encode_offsets(&offsets, &mut blob);
            let mut back = Vec::new();
            decode_offsets(&blob, |o| back.push(u32::try_from(o).expect("fits")));
            assert_eq!(back, offsets);
        }
        // Dense lists cost one byte per record.
        let mut blob = Vec::new();
        encode_offsets(&(0..1024).collect::<Vec<_>>(), &mut blob);
        assert_eq!(blob.len(), 1024);
    }
}
