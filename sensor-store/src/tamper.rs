//! What an attacker with root does to the record blocks, for tests (feature `tamper`): the
//! records read out as the rows of a table, edited, and written back as blocks, as the
//! `records` table of layout 2 let tests edit them with SQL. Panics on any error.

use rusqlite::Connection;

use crate::block::{self, BlockEncoder};

/// A record as a row: its seq (the block's numbering), the batch whose seq range holds it
/// (-1 when none does), the kept leaf hash and the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub seq: i64,
    pub batch: i64,
    pub leaf: Vec<u8>,
    pub bytes: Vec<u8>,
}

/// Every record of the store, in seq order.
pub fn rows(conn: &Connection) -> Vec<Row> {
    let ranges: Vec<(i64, i64, i64)> = conn
        .prepare("SELECT number, first_seq, count FROM batches")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .expect("batches");
    let blocks: Vec<(i64, Vec<u8>)> = conn
        .prepare("SELECT first_seq, data FROM blocks ORDER BY first_seq")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .expect("blocks");
    let mut rows = Vec::new();
    for (first, data) in blocks {
        for (seq, (leaf, bytes)) in (first..).zip(block::decode(&data).expect("block decodes")) {
            let batch = ranges
                .iter()
                .find(|(_, f, c)| (*f..f + c).contains(&seq))
                .map_or(-1, |b| b.0);
            rows.push(Row {
                seq,
                batch,
                leaf: leaf.to_vec(),
                bytes,
            });
        }
    }
    rows
}

/// Replaces every block by blocks holding `rows`, sorted by seq, as the writer builds them:
/// a new block where the batch changes, a seq is skipped, or the block is full.
pub fn write_rows(conn: &Connection, mut rows: Vec<Row>) {
    rows.sort_by_key(|r| r.seq);
    conn.execute("DELETE FROM blocks", [])
        .expect("delete blocks");
    let mut encoder = BlockEncoder::new().expect("encoder");
    let mut first: Option<&Row> = None;
    let mut last: Option<&Row> = None;
    let flush = |encoder: &mut BlockEncoder, first: Option<&Row>| {
        if let Some(first) = first {
            let data = encoder.finish().expect("compress");
            conn.execute(
                "INSERT INTO blocks (first_seq, data) VALUES (?1, ?2)",
                rusqlite::params![first.seq, data],
            )
            .expect("insert block");
        }
    };
    for row in &rows {
        let joins = last.is_some_and(|l| {
            l.batch == row.batch && l.seq + 1 == row.seq && encoder.fits(row.bytes.len())
        });
        if !joins {
            flush(&mut encoder, first);
            first = Some(row);
        }
        let mut leaf = [0; 32];
        let n = row.leaf.len().min(32);
        leaf[..n].copy_from_slice(&row.leaf[..n]);
        encoder.push(&leaf, &row.bytes).expect("push");
        last = Some(row);
    }
    flush(&mut encoder, first);
}

/// The rows, changed by `edit`, written back.
pub fn edit_rows(conn: &Connection, edit: impl FnOnce(&mut Vec<Row>)) {
    let mut rows = rows(conn);
    edit(&mut rows);
    write_rows(conn, rows);
}

/// Row `seq` of `rows`.
pub fn row(rows: &mut [Row], seq: i64) -> &mut Row {
    rows.iter_mut()
        .find(|r| r.seq == seq)
        .unwrap_or_else(|| panic!("no record {seq}"))
}

/// Records `a` and `b` trade places.
pub fn swap(conn: &Connection, a: i64, b: i64) {
    edit_rows(conn, |rows| {
        row(rows, a).seq = i64::MIN;
        row(rows, b).seq = a;
        row(rows, i64::MIN).seq = b;
    });
}

/// Record `seq` removed.
pub fn delete(conn: &Connection, seq: i64) {
    edit_rows(conn, |rows| rows.retain(|r| r.seq != seq));
}

/// The store as a build of layout 2 left it, for the migration's tests: the records of
/// `rows` from `moved_below` on back in a `records` table (with the unsigned columns that
/// layout kept), the blocks holding the rest kept as a migration interrupted there would
/// (`moved_below` 0: no blocks table at all), and the layout set to 2.
pub fn to_layout_2(conn: &Connection, moved_below: i64) {
    let rows = rows(conn);
    conn.execute_batch(crate::store::RECORDS_LAYOUT_2)
        .expect("records table");
    for r in rows.iter().filter(|r| r.seq >= moved_below) {
        conn.execute(
            "INSERT INTO records (seq, epoch, batch, wall_ns, kind, leaf, bytes)
             VALUES (?1, 1, ?2, 0, 'file_open', ?3, ?4)",
            rusqlite::params![r.seq, r.batch, r.leaf, r.bytes],
        )
        .expect("insert record");
    }
    if moved_below > 0 {
        write_rows(
            conn,
            rows.into_iter().filter(|r| r.seq < moved_below).collect(),
        );
    } else {
        conn.execute_batch("DROP TABLE blocks")
            .expect("drop blocks");
    }
    conn.pragma_update(None, "user_version", 2).expect("layout");
}
