//! The query index: a term dictionary and per-batch posting lists.
//!
//! Instead of one secondary B-tree entry per record and column (six indexes, each written on
//! every insert, which dominated the durable path), every batch writes one `postings` row per
//! distinct term it contains: `(term, batch) -> the record offsets in that batch`. A batch of
//! 1024 events from a handful of processes writes a few dozen small rows instead of 6144 index
//! entries. Terms are the query dimensions (kind, path, exe, user, unit, container, human,
//! pid), each value stored once in `terms` and referred to by its integer id.
//!
//! Postings are not signed: they only narrow which records a query decodes, and every filter
//! is applied again to the decoded record, so a tampered posting can never make the output
//! lie. That it cannot hide a record either is `verify`'s job (`index_check.rs`).

use std::collections::HashMap;

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{params, OptionalExtension, ToSql, Transaction};

use crate::error::{Error, Result};
use sensor_log::record::Body;

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

impl Dim {
    pub(crate) fn from_column(dim: i64) -> Option<Dim> {
        [
            Dim::Kind,
            Dim::Path,
            Dim::Exe,
            Dim::User,
            Dim::Unit,
            Dim::Container,
            Dim::Human,
            Dim::Pid,
        ]
        .into_iter()
        .find(|d| *d as i64 == dim)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Dim::Kind => "kind",
            Dim::Path => "path",
            Dim::Exe => "exe",
            Dim::User => "user",
            Dim::Unit => "unit",
            Dim::Container => "container",
            Dim::Human => "human",
            Dim::Pid => "pid",
        }
    }
}

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

/// A term value borrowed from a record: text as its UTF-8 bytes, so that reading it from a
/// record's encoding in place needs no validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Term<'a> {
    Text(&'a [u8]),
    Int(i64),
}

impl std::fmt::Display for Term<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Term::Text(t) => write!(f, "{:?}", String::from_utf8_lossy(t)),
            Term::Int(i) => write!(f, "{i}"),
        }
    }
}

/// Every (dimension, value) a record is indexed under: the one definition of what the index
/// holds, used by the writer and by the index check of `verify`.
pub(crate) fn each_term<'a>(body: &'a Body, mut each: impl FnMut(Dim, Term<'a>)) {
    each(Dim::Kind, Term::Text(body.kind_name().as_bytes()));
    let Body::Event(e) = body else {
        return;
    };
    if let Some(p) = &e.process {
        each(Dim::Pid, Term::Int(i64::from(p.pid)));
        each(Dim::Exe, Term::Text(p.exe.as_bytes()));
    }
    if let Some(i) = &e.identity {
        each(Dim::User, Term::Text(i.user.as_bytes()));
        if let Some(unit) = &i.unit {
            each(Dim::Unit, Term::Text(unit.as_bytes()));
        }
        if let Some(c) = &i.container {
            each(Dim::Container, Term::Text(c.id.as_bytes()));
        }
        each(Dim::Human, Term::Int(i64::from(i.human)));
    }
    if let Some(f) = &e.file {
        each(Dim::Path, Term::Text(f.path.as_bytes()));
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
    text: [HashMap<Vec<u8>, u32>; DIMS],
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
    /// `value` comes from a `&str` (`each_term` on a decoded record), so it is UTF-8.
    fn text(&mut self, dim: Dim, value: &[u8]) -> u32 {
        let slot = dim as usize - 1;
        if let Some(&n) = self.text[slot].get(value) {
            return n;
        }
        let n = self.push(
            dim,
            TermValue::Text(String::from_utf8_lossy(value).into_owned()),
        );
        self.text[slot].insert(value.to_vec(), n);
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
        each_term(body, |dim, term| {
            t[dim as usize - 1] = match term {
                Term::Text(text) => self.text(dim, text),
                Term::Int(i) => self.int(dim, i),
            }
        });
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

/// SQL selecting a postings row's `offsets` when it is at most `MAX_VALUE_BYTES` long (NULL
/// otherwise, never loaded), then its length; read with [`offsets_column`].
pub(crate) fn offsets_sql() -> String {
    format!(
        "CASE WHEN octet_length(offsets) <= {} THEN offsets END, octet_length(offsets)",
        crate::store::MAX_VALUE_BYTES
    )
}

/// The offsets blob at column `i` of a row selected with [`offsets_sql`], or what is wrong
/// with it.
pub(crate) fn offsets_column<'r>(
    row: &'r rusqlite::Row<'_>,
    i: usize,
) -> Result<std::result::Result<&'r [u8], String>> {
    Ok(match row.get_ref(i)? {
        ValueRef::Blob(b) => Ok(b),
        ValueRef::Null => Err(match row.get_ref(i + 1)? {
            ValueRef::Integer(len) if len > 0 => format!("{len} bytes, too large to read"),
            _ => "NULL".to_string(),
        }),
        _ => Err("not a blob".to_string()),
    })
}

/// Longest LEB128 varint of a `u32` gap.
const MAX_VARINT: usize = 5;

/// Inverse of `encode_offsets` for a batch of `count` records: calls `each` with every
/// offset, ascending and below `count`. Anything else (a tampered row) is an error, found
/// before more than `count` offsets are produced: a blob longer than 5 bytes per record is
/// refused without reading it.
pub(crate) fn decode_offsets(
    bytes: &[u8],
    count: u64,
    mut each: impl FnMut(u64),
) -> std::result::Result<(), String> {
    if bytes.len() as u64 > count.saturating_mul(MAX_VARINT as u64) {
        return Err(format!(
            "{} bytes for a batch of {count} records",
            bytes.len()
        ));
    }
    let mut next: u64 = 0;
    let mut gap: u64 = 0;
    let mut len = 0;
    for &b in bytes {
        gap |= u64::from(b & 0x7f) << (7 * len);
        len += 1;
        if b & 0x80 != 0 {
            if len == MAX_VARINT {
                return Err("a varint longer than 5 bytes".to_string());
            }
            continue;
        }
        let offset = next + gap;
        if offset >= count {
            return Err(format!(
                "offset {offset} beyond the batch's {count} records"
            ));
        }
        each(offset);
        next = offset + 1;
        gap = 0;
        len = 0;
    }
    if len > 0 {
        return Err("a truncated varint".to_string());
    }
    Ok(())
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
            decode_offsets(&blob, 1_000_001, |o| {
                back.push(u32::try_from(o).expect("fits"))
            })
            .expect("decodes");
            assert_eq!(back, offsets);
        }
        // Dense lists cost one byte per record.
        let mut blob = Vec::new();
        encode_offsets(&(0..1024).collect::<Vec<_>>(), &mut blob);
        assert_eq!(blob.len(), 1024);
    }

    #[test]
    fn offsets_are_bounded_by_the_batch() {
        let none = |_| {};
        let mut blob = Vec::new();
        encode_offsets(&[0, 7], &mut blob);
        assert!(decode_offsets(&blob, 8, none).is_ok());
        assert!(
            decode_offsets(&blob, 7, none).is_err(),
            "offset 7 of 7 records"
        );
        assert!(
            decode_offsets(&[0; 11], 2, none).is_err(),
            "longer than 5 bytes a record"
        );
        assert!(decode_offsets(&[0x80], 8, none).is_err(), "truncated");
        assert!(
            decode_offsets(&[0xff; 6], 8, none).is_err(),
            "a 6-byte varint"
        );
        // A blob of zero gaps decodes to 0, 1, 2, ...: never a repeated offset.
        let mut seen = Vec::new();
        decode_offsets(&[0; 4], 4, |o| seen.push(o)).expect("decodes");
        assert_eq!(seen, [0, 1, 2, 3]);
    }
}
