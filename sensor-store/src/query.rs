//! Reading records back for `sensorctl events`, `identities` and `--follow`.
//!
//! The index (per-batch postings of query terms, per-batch time ranges; see `index.rs`) only
//! narrows the candidate rows; every filter is applied again to the record decoded from its
//! signed bytes, and only decoded data is returned.

use std::collections::HashSet;

use rusqlite::types::ValueRef;
use rusqlite::{params, OptionalExtension};

use crate::block::Block;
use crate::error::{Error, Result};
use crate::index::{decode_offsets, offsets_column, offsets_sql, Dim, TermValue};
use crate::records::{self, Cursor, PointReader};
use crate::store::{to_i64, to_u64, Store};
use sensor_log::record::Record;

pub use sensor_log::filter::{Filter, IndexColumns};

/// The term conditions of a filter: per set field, the dimension and the values any of which
/// must hold.
fn term_conditions(filter: &Filter) -> Vec<(Dim, Vec<Lookup>)> {
    let mut out = Vec::new();
    if !filter.kinds.is_empty() {
        let values = filter.kinds.iter().map(|k| Lookup::Eq(text(k))).collect();
        out.push((Dim::Kind, values));
    }
    if let Some(p) = &filter.path_prefix {
        out.push((Dim::Path, vec![Lookup::Prefix(p.clone())]));
    }
    if let Some(p) = filter.pid {
        out.push((Dim::Pid, vec![Lookup::Eq(TermValue::Int(i64::from(p)))]));
    }
    for (dim, value) in [
        (Dim::Exe, &filter.exe),
        (Dim::User, &filter.user),
        (Dim::Unit, &filter.unit),
        (Dim::Container, &filter.container),
    ] {
        if let Some(v) = value {
            out.push((dim, vec![Lookup::Eq(text(v))]));
        }
    }
    if let Some(h) = filter.human {
        out.push((Dim::Human, vec![Lookup::Eq(TermValue::Int(i64::from(h)))]));
    }
    out
}

fn text(s: &str) -> TermValue {
    TermValue::Text(s.to_string())
}

enum Lookup {
    Eq(TermValue),
    /// Every text value starting with this (a path glob's literal prefix).
    Prefix(String),
}

/// Batches in the first window of a term query, so the first page comes after reading the
/// postings of a few batches whatever the size of the answer; each next window doubles, up
/// to `MAX_WINDOW`, so a long answer still reads the postings in long runs.
const FIRST_WINDOW: usize = 8;
const MAX_WINDOW: usize = 1024;

impl Store {
    /// Non-empty batches that may hold a record within the filter's time and seq bounds
    /// (each batch stores the wall-time range of its records), ascending:
    /// (number, first seq, count).
    fn batches_in_bounds(&self, filter: &Filter) -> Result<Vec<(i64, u64, u64)>> {
        let since = to_i64(filter.since_ns.unwrap_or(0))?;
        let until = filter.until_ns.map_or(Ok(i64::MAX), to_i64)?;
        let after = filter.after_seq.map_or(Ok(0), to_i64)?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT number, first_seq, count FROM batches
             WHERE count > 0 AND max_wall >= ?1 AND min_wall <= ?2 AND first_seq + count > ?3 + 1
             ORDER BY number",
        )?;
        let mut rows = stmt.query(params![since, until, after])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push((
                r.get(0)?,
                to_u64(r.get(1)?, "first seq")?,
                to_u64(r.get(2)?, "count")?,
            ));
        }
        Ok(out)
    }

    /// The store ids of the terms a lookup names.
    fn term_ids(&self, dim: Dim, lookup: &Lookup, ids: &mut Vec<i64>) -> Result<()> {
        let dim = dim as i64;
        match lookup {
            Lookup::Eq(value) => {
                let id: Option<i64> = self
                    .conn
                    .prepare_cached("SELECT id FROM terms WHERE dim = ?1 AND value = ?2")?
                    .query_row(params![dim, value], |r| r.get(0))
                    .optional()?;
                ids.extend(id);
            }
            Lookup::Prefix(prefix) => {
                let mut stmt = self.conn.prepare_cached(
                    "SELECT id, value FROM terms WHERE dim = ?1 AND value >= ?2 ORDER BY value",
                )?;
                let mut rows = stmt.query(params![dim, prefix])?;
                while let Some(r) = rows.next()? {
                    let ValueRef::Text(v) = r.get_ref(1)? else {
                        break;
                    };
                    if !v.starts_with(prefix.as_bytes()) {
                        break;
                    }
                    ids.push(r.get(0)?);
                }
            }
        }
        Ok(())
    }

    /// Seqs of the records indexed under any of `terms` in `batches`, ascending.
    ///
    /// Postings are keyed by (batch, term), the order the writer appends them in. A few terms
    /// are looked up batch by batch; many terms (a broad path prefix) scan the postings of the
    /// batch range once, whichever reads fewer rows.
    fn posted_seqs(&self, terms: &[i64], batches: &[(i64, u64, u64)]) -> Result<Vec<u64>> {
        let mut seqs = Vec::new();
        let Some((&(first, ..), &(last, ..))) = batches.first().zip(batches.last()) else {
            return Ok(seqs);
        };
        let sample_from = last.saturating_sub(3).max(first);
        let sample: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM postings WHERE batch BETWEEN ?1 AND ?2",
            params![sample_from, last],
            |r| r.get(0),
        )?;
        let per_batch = sample / (last - sample_from + 1);
        let span = last - first + 1;
        let points = (terms.len() as i64).saturating_mul(batches.len() as i64);
        // Offsets are bounded by the batch's record count, so a tampered posting can neither
        // cost memory beyond its batch nor name a record of another batch (listing it twice).
        let mut add = |(number, first_seq, count): (i64, u64, u64),
                       offsets: std::result::Result<&[u8], String>| {
            let offsets = offsets.map_err(|e| damaged(number, e))?;
            decode_offsets(offsets, count, |o| seqs.push(first_seq.saturating_add(o)))
                .map_err(|e| damaged(number, e))
        };
        // A point lookup costs about as much as scanning ten rows.
        if points.saturating_mul(10) <= span.saturating_mul(per_batch) {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT {} FROM postings WHERE batch = ?1 AND term = ?2",
                offsets_sql()
            ))?;
            for &batch in batches {
                for &term in terms {
                    let mut rows = stmt.query(params![batch.0, term])?;
                    if let Some(r) = rows.next()? {
                        add(batch, offsets_column(r, 0)?)?;
                    }
                }
            }
        } else {
            let wanted: HashSet<i64> = terms.iter().copied().collect();
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT batch, term, {} FROM postings WHERE batch BETWEEN ?1 AND ?2",
                offsets_sql()
            ))?;
            let mut rows = stmt.query(params![first, last])?;
            let mut at = batches.iter().peekable();
            while let Some(r) = rows.next()? {
                if !wanted.contains(&r.get::<_, i64>(1)?) {
                    continue;
                }
                let number: i64 = r.get(0)?;
                while at.peek().is_some_and(|&&(n, ..)| n < number) {
                    at.next();
                }
                if let Some(&&batch) = at.peek() {
                    if batch.0 == number {
                        add(batch, offsets_column(r, 2)?)?;
                    }
                }
            }
        }
        if terms.len() > 1 {
            seqs.sort_unstable();
            seqs.dedup();
        }
        Ok(seqs)
    }

    /// Seqs of the records in `batches` indexed under at least one term of every set of
    /// `dims` and above the filter's `after_seq`, ascending.
    fn seqs_in(
        &self,
        dims: &[Vec<i64>],
        batches: &[(i64, u64, u64)],
        filter: &Filter,
    ) -> Result<Vec<u64>> {
        let mut result: Option<Vec<u64>> = None;
        for ids in dims {
            let seqs = self.posted_seqs(ids, batches)?;
            let narrowed = match result {
                None => seqs,
                Some(previous) => intersect(&previous, &seqs),
            };
            if narrowed.is_empty() {
                return Ok(narrowed);
            }
            result = Some(narrowed);
        }
        let mut seqs = result.unwrap_or_default();
        if let Some(after) = filter.after_seq {
            seqs.retain(|&s| s > after);
        }
        Ok(seqs)
    }

    /// Visits matching records in sequence order until `visit` returns false. A row whose
    /// bytes do not decode is an error (run `sensorctl verify`), never silently skipped.
    ///
    /// The index (postings, batch time ranges) only narrows the candidates; `Filter::matches`
    /// on the decoded record decides.
    pub fn query(&self, filter: &Filter, visit: impl FnMut(Record) -> Result<bool>) -> Result<()> {
        self.query_in_order(filter, false, visit)
    }

    /// Like [`Store::query`], newest record first: "the last N" stops after N matches
    /// instead of reading every match.
    pub fn query_newest_first(
        &self,
        filter: &Filter,
        visit: impl FnMut(Record) -> Result<bool>,
    ) -> Result<()> {
        self.query_in_order(filter, true, visit)
    }

    fn query_in_order(
        &self,
        filter: &Filter,
        newest_first: bool,
        mut visit: impl FnMut(Record) -> Result<bool>,
    ) -> Result<()> {
        let mut each = |bytes: &[u8]| -> Result<bool> {
            let record = Record::decode(bytes)?;
            if filter.matches(&record) {
                return visit(record);
            }
            Ok(true)
        };
        // One read transaction: a consistent snapshot, and no lock/unlock per point lookup.
        let snapshot = self.conn.unchecked_transaction()?;
        let conditions = term_conditions(filter);
        if conditions.is_empty() {
            // The time bounds choose the batches; the decoded record decides the rest.
            let bounded = filter.since_ns.is_some()
                || filter.until_ns.is_some()
                || filter.after_seq.is_some();
            let mut ranges = if bounded {
                seq_ranges(&self.batches_in_bounds(filter)?)
            } else {
                vec![(0, u64::MAX)]
            };
            let mut stmt = records::prepare(&self.conn, newest_first)?;
            if newest_first {
                ranges.reverse();
            }
            let from = filter.after_seq.map_or(0, |after| after.saturating_add(1));
            // One decoder for every range.
            let mut block = Block::new()?;
            'ranges: for (lo, hi) in ranges {
                let lo = lo.max(from);
                if lo > hi {
                    continue;
                }
                let mut cursor = Cursor::new(&self.conn, &mut stmt, block, (lo, hi), newest_first)?;
                while let Some(r) = cursor.next()? {
                    if !each(r.bytes.map_err(|d| records::damaged(r.seq, d))?)? {
                        break 'ranges;
                    }
                }
                block = cursor.into_block();
            }
        } else {
            // The terms each condition names, once; then the candidates window by window,
            // in the order of the answer, each window's records visited before the next
            // window's postings are read.
            let mut dims = Vec::with_capacity(conditions.len());
            for (dim, lookups) in &conditions {
                let mut ids = Vec::new();
                for lookup in lookups {
                    self.term_ids(*dim, lookup, &mut ids)?;
                }
                if ids.is_empty() {
                    return Ok(());
                }
                dims.push(ids);
            }
            let batches = self.batches_in_bounds(filter)?;
            let mut reader = PointReader::new()?;
            let mut rest = &batches[..];
            let mut window = FIRST_WINDOW;
            'windows: while !rest.is_empty() {
                let n = window.min(rest.len());
                let part = if newest_first {
                    let (before, part) = rest.split_at(rest.len() - n);
                    rest = before;
                    part
                } else {
                    let (part, after) = rest.split_at(n);
                    rest = after;
                    part
                };
                window = (window * 2).min(MAX_WINDOW);
                let mut seqs = self.seqs_in(&dims, part, filter)?;
                if newest_first {
                    seqs.reverse();
                }
                for seq in seqs {
                    if let Some(bytes) = reader.get(&self.conn, seq)? {
                        if !each(bytes)? {
                            break 'windows;
                        }
                    }
                }
            }
        }
        drop(snapshot);
        Ok(())
    }
}

/// The seq ranges of `batches` (inclusive), adjacent ones merged, ascending.
fn seq_ranges(batches: &[(i64, u64, u64)]) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &(_, first_seq, count) in batches {
        let (lo, hi) = (first_seq, first_seq.saturating_add(count - 1));
        match ranges.last_mut() {
            Some(last) if last.1.saturating_add(1) == lo => last.1 = hi,
            _ => ranges.push((lo, hi)),
        }
    }
    ranges
}

/// A postings row that does not decode: queries would not be complete, so they stop.
fn damaged(batch: i64, detail: String) -> Error {
    Error::malformed(
        "query index",
        format!("the postings of batch {batch} are damaged ({detail}); run `sensorctl verify`"),
    )
}

/// Intersection of two ascending lists.
fn intersect(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}
