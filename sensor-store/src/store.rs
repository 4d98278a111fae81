//! The SQLite store: `log.db` in the state directory, WAL mode.
//!
//! The records in `blocks` (`block.rs`) and `batches.header`/`signature` are the signed
//! truth. The other columns (block first seqs; batch ranges, counts and times) and the query
//! index (`terms`, `postings`) are unsigned copies that exist so queries can narrow their
//! search; readers re-check every filter against the decoded bytes and display only decoded
//! data, and `verify` checks every copy against the signed data, so an edited copy can
//! neither make the output lie nor hide a record from a query on a verified store. The leaf
//! hash a block keeps beside each record lets the verifier name the exact record that was
//! modified. Both the writer and the readers refuse a store whose schema is not exactly
//! this build's (`BLOCKS` and `TABLES`); the writer migrates a store of layout 2 first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::error::{Error, Result};
use crate::index::{self, Dim};
use sensor_log::batch::BatchHeader;

pub const DB_FILE: &str = "log.db";

/// SQLite page cache of the writer, in KiB.
const WRITER_CACHE_KIB: i64 = 64 * 1024;
/// Page cache of a reader (`sensorctl`), in KiB: the index pages of a large store fit.
const READER_CACHE_KIB: i64 = 64 * 1024;
/// Page cache of `verify`'s connections, in KiB: it reads every block and posting once, in
/// order, so a larger cache only costs page faults and memory (docs/performance.md).
const VERIFY_CACHE_KIB: i64 = 2 * 1024;

/// Longest text or blob SQLite loads on our connections (`SQLITE_LIMIT_LENGTH`): a value
/// planted in the store larger than this is an error before it is allocated. Records and
/// headers are at most `MAX_ENCODED_BYTES` (1 MiB); a postings blob is at most 5 bytes per
/// record of its batch.
pub(crate) const MAX_VALUE_BYTES: i32 = 16 << 20;

/// Layout of the store (`PRAGMA user_version`); 2 replaced per-column record indexes by the
/// term dictionary and per-batch postings (see `index.rs`); 3 replaced the `records` table,
/// a row per record, by `blocks`, a compressed row per batch (see `block.rs`).
pub(crate) const STORE_LAYOUT: i64 = 3;

/// Page size of a new store. Larger pages mean shallower B-trees and fewer WAL frames per
/// batch; 16 KiB measured best for ~500-byte records (docs/performance.md).
const PAGE_SIZE: i64 = 16 * 1024;

/// The record blocks (layout 3; `block.rs`).
const BLOCKS: &str = "
CREATE TABLE IF NOT EXISTS blocks (
    first_seq INTEGER PRIMARY KEY,
    data      BLOB NOT NULL
);
";

/// The `records` table of layout 2, a row per record: still recognised so that a store of
/// that layout is migrated (`migrate.rs`); never created.
pub(crate) const RECORDS_LAYOUT_2: &str = "
CREATE TABLE IF NOT EXISTS records (
    seq       INTEGER PRIMARY KEY,
    epoch     INTEGER NOT NULL,
    batch     INTEGER NOT NULL,
    wall_ns   INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    leaf      BLOB NOT NULL,
    bytes     BLOB NOT NULL
);
";

/// The tables layouts 2 and 3 share.
const TABLES: &str = "
CREATE TABLE IF NOT EXISTS terms (
    id        INTEGER PRIMARY KEY,
    dim       INTEGER NOT NULL,
    value     NOT NULL,
    UNIQUE (dim, value)
);
CREATE TABLE IF NOT EXISTS postings (
    term      INTEGER NOT NULL,
    batch     INTEGER NOT NULL,
    offsets   BLOB NOT NULL,
    PRIMARY KEY (batch, term)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    number    INTEGER PRIMARY KEY,
    epoch     INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    count     INTEGER NOT NULL,
    bytes     INTEGER NOT NULL,
    wall_ns   INTEGER NOT NULL,
    min_wall  INTEGER NOT NULL DEFAULT 0,
    max_wall  INTEGER NOT NULL DEFAULT 0,
    header    BLOB NOT NULL,
    signature BLOB NOT NULL,
    digest    BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    key_epoch  INTEGER PRIMARY KEY,
    public_key BLOB NOT NULL,
    created_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
";

/// Meta names.
pub(crate) const META_HOST_ID: &str = "host_id";
pub(crate) const META_BOOT_ID: &str = "boot_id";
/// Digest of the last batch, written in the same transaction as that batch at clean stop.
pub(crate) const META_CLEAN_STOP: &str = "clean_stop";

pub struct Store {
    pub(crate) conn: Connection,
    dir: PathBuf,
}

/// A signing key's entry in the `keys` table.
#[derive(Clone, Debug)]
pub struct KeyInfo {
    pub key_epoch: u64,
    pub public_key: VerifyingKey,
    pub created_ns: u64,
}

/// A batch row as stored.
#[derive(Clone, Debug)]
pub struct StoredBatch {
    pub number: u64,
    pub header: BatchHeader,
    pub header_bytes: Vec<u8>,
    pub signature: Vec<u8>,
}

impl Store {
    /// Read-only open for `sensorctl`; works while the writer runs (WAL readers never block it).
    /// The schema must be exactly the one this build creates (`check_schema`).
    pub fn open_read_only(state_dir: &Path) -> Result<Store> {
        let path = state_dir.join(DB_FILE);
        if !path.is_file() {
            return Err(Error::NoStore(state_dir.to_path_buf()));
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        harden(&conn)?;
        check_schema(&conn, &path, false)?;
        let store = Store {
            conn,
            dir: state_dir.to_path_buf(),
        };
        store.cache_for_queries()?;
        Ok(store)
    }

    /// Read-write open for the writer: creates the schema, WAL, `synchronous=FULL` so a
    /// committed batch survives power loss, incremental vacuum so pruning returns space.
    /// An existing store must have exactly this build's schema (`check_schema`).
    /// A store of layout 2 is migrated first; the second value is the records it moved.
    pub(crate) fn open_writable(state_dir: &Path) -> Result<(Store, Option<u64>)> {
        let path = state_dir.join(DB_FILE);
        let conn = Connection::open(&path)?;
        harden(&conn)?;
        let objects: i64 =
            conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))?;
        if objects > 0 {
            check_schema(&conn, &path, true)?;
        }
        // Both only take effect on a new (empty) database file.
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        // Checkpoint every 16 MiB of WAL (1024 pages of 16 KiB), not every 1000 pages: pages
        // rewritten by consecutive batches then reach the database file once.
        conn.pragma_update(None, "wal_autocheckpoint", 1024)?;
        if objects == 0 {
            // In one transaction: a store is either empty or complete with its layout.
            conn.execute_batch(&format!(
                "BEGIN; {BLOCKS}{TABLES} PRAGMA user_version = {STORE_LAYOUT}; COMMIT;"
            ))?;
        }
        let mut store = Store {
            conn,
            dir: state_dir.to_path_buf(),
        };
        let mut migrated = None;
        if layout(&store.conn)? == 2 {
            migrated = Some(crate::migrate::layout_2_to_3(&mut store.conn, BLOCKS)?);
            check_schema(&store.conn, &path, false)?;
        }
        Ok((store, migrated))
    }

    /// Sizes the page cache for `verify`'s one pass.
    pub(crate) fn cache_for_verify(&self) -> Result<()> {
        self.set_cache_kib(VERIFY_CACHE_KIB)
    }

    /// Sizes the page cache for queries, what a reader opens with.
    pub(crate) fn cache_for_queries(&self) -> Result<()> {
        self.set_cache_kib(READER_CACHE_KIB)
    }

    fn set_cache_kib(&self, kib: i64) -> Result<()> {
        Ok(self.conn.pragma_update(None, "cache_size", -kib)?)
    }

    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// The newest batch, i.e. the durable end of the chain.
    pub fn last_batch(&self) -> Result<Option<StoredBatch>> {
        self.batch_where("ORDER BY number DESC LIMIT 1", [])
    }

    /// Records of batches `first..=last` by kind name, counted in the query index's
    /// postings of the kind dimension (unsigned, like every index; `verify` checks it).
    pub(crate) fn kinds_in_batches(&self, first: u64, last: u64) -> Result<BTreeMap<String, u64>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT t.value, b.count, {}
             FROM postings p JOIN terms t ON t.id = p.term JOIN batches b ON b.number = p.batch
             WHERE t.dim = ?1 AND p.batch BETWEEN ?2 AND ?3",
            index::offsets_sql()
        ))?;
        let mut rows = stmt.query(params![Dim::Kind as i64, to_i64(first)?, to_i64(last)?])?;
        let mut counts = BTreeMap::new();
        while let Some(r) = rows.next()? {
            let kind = match r.get_ref(0)? {
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                _ => continue,
            };
            let count = to_u64(r.get(1)?, "count")?;
            let Ok(offsets) = index::offsets_column(r, 2)? else {
                continue;
            };
            let mut n = 0;
            // A damaged postings row counts what it holds up to the damage.
            let _ = index::decode_offsets(offsets, count, |_| n += 1);
            *counts.entry(kind).or_default() += n;
        }
        Ok(counts)
    }

    /// The oldest retained batch.
    pub fn first_batch(&self) -> Result<Option<StoredBatch>> {
        self.batch_where("ORDER BY number ASC LIMIT 1", [])
    }

    /// Batch `number`, if the store holds it.
    pub fn batch(&self, number: u64) -> Result<Option<StoredBatch>> {
        self.batch_where("WHERE number = ?1", [to_i64(number)?])
    }

    fn batch_where(
        &self,
        tail: &str,
        params: impl rusqlite::Params,
    ) -> Result<Option<StoredBatch>> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT number, header, signature FROM batches {tail}"),
                params,
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(number, header_bytes, signature)| {
            Ok(StoredBatch {
                number: to_u64(number, "batch number")?,
                header: BatchHeader::decode(&header_bytes)?,
                header_bytes,
                signature,
            })
        })
        .transpose()
    }

    /// Public key of a key epoch as the store records it (trust on first use unless pinned).
    pub fn public_key(&self, key_epoch: u64) -> Result<Option<VerifyingKey>> {
        let bytes: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT public_key FROM keys WHERE key_epoch = ?1",
                [to_i64(key_epoch)?],
                |r| r.get(0),
            )
            .optional()?;
        bytes.map(|b| parse_key(&b)).transpose()
    }

    /// The newest signing key as the store announces it.
    pub fn current_key(&self) -> Result<Option<KeyInfo>> {
        let row: Option<(i64, Vec<u8>, i64)> = self
            .conn
            .query_row("SELECT key_epoch, public_key, created_ns FROM keys ORDER BY key_epoch DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        row.map(|(epoch, key, created)| {
            Ok(KeyInfo {
                key_epoch: to_u64(epoch, "key epoch")?,
                public_key: parse_key(&key)?,
                created_ns: to_u64(created, "key creation time")?,
            })
        })
        .transpose()
    }

    /// Number of records the retained batches hold, for status output (counting them in the
    /// blocks would read every block; `verify` counts them).
    pub fn record_count(&self) -> Result<u64> {
        let n: i64 =
            self.conn
                .query_row("SELECT COALESCE(SUM(count), 0) FROM batches", [], |r| {
                    r.get(0)
                })?;
        to_u64(n, "record count")
    }

    /// Inserts one batch row (inside the writer's transaction).
    pub(crate) fn insert_batch(
        tx: &rusqlite::Transaction<'_>,
        sealed: &sensor_log::batch::SealedBatch,
        bytes: u64,
        wall_range: (u64, u64),
    ) -> Result<()> {
        let h = &sealed.header;
        tx.prepare_cached(
            "INSERT INTO batches (number, epoch, first_seq, count, bytes, wall_ns, min_wall, max_wall, header, signature, digest)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            to_i64(h.number)?,
            to_i64(h.epoch)?,
            to_i64(h.first_seq)?,
            to_i64(h.count)?,
            to_i64(bytes)?,
            to_i64(h.wall_ns)?,
            to_i64(wall_range.0)?,
            to_i64(wall_range.1)?,
            sealed.header_bytes,
            &sealed.signature[..],
            &sealed.digest[..],
        ])?;
        Ok(())
    }

    pub(crate) fn set_meta(tx: &rusqlite::Transaction<'_>, name: &str, value: &[u8]) -> Result<()> {
        tx.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES (?1, ?2)",
            params![name, value],
        )?;
        Ok(())
    }
}

/// Limits for a connection to a store that root may have edited: schema SQL is not trusted to
/// call functions with side effects, and no value larger than `MAX_VALUE_BYTES` is loaded.
fn harden(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "trusted_schema", false)?;
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)?;
    Ok(())
}

/// The store must have layout `STORE_LAYOUT` and exactly the tables and indexes `BLOCKS` and
/// `TABLES` create, with the same SQL: a view, trigger, extra index or redefined table in their place
/// would run attacker-chosen SQL inside `verify` and queries (a recursive view never ends)
/// or inside the writer's inserts (a trigger). Refused with an error naming the object.
///
/// The writer (`migrating`) also takes a store of layout 2, which it then migrates.
fn check_schema(conn: &Connection, path: &Path, migrating: bool) -> Result<()> {
    let refuse = |detail: String| Error::Schema {
        path: path.to_path_buf(),
        detail,
    };
    let layout = layout(conn)?;
    let schema = match (layout, migrating) {
        (STORE_LAYOUT, _) => format!("{BLOCKS}{TABLES}"),
        // A migration may have stopped after creating `blocks`.
        (2, true) if table_exists(conn, "blocks")? => format!("{RECORDS_LAYOUT_2}{BLOCKS}{TABLES}"),
        (2, true) => format!("{RECORDS_LAYOUT_2}{TABLES}"),
        (2, false) => {
            return Err(refuse(format!(
                "layout 2, this build reads layout {STORE_LAYOUT}; starting the agent of this build migrates it"
            )))
        }
        _ => {
            return Err(refuse(format!(
                "layout {layout}, this build reads layout {STORE_LAYOUT}"
            )))
        }
    };
    let reference = Connection::open_in_memory()?;
    reference.execute_batch(&schema)?;
    let expected = schema_of(&reference)?;
    let actual = schema_of(conn)?;
    for (name, (kind, sql)) in &actual {
        match expected.get(name) {
            None => return Err(refuse(format!("unexpected {kind} `{name}`"))),
            Some((k, s)) if (k, s) != (kind, sql) => {
                return Err(refuse(format!(
                    "{kind} `{name}` is not the {k} this build creates: {}",
                    sql.as_deref().unwrap_or("(no SQL)")
                )))
            }
            Some(_) => {}
        }
    }
    if let Some((name, (kind, _))) = expected.iter().find(|(n, _)| !actual.contains_key(*n)) {
        return Err(refuse(format!("{kind} `{name}` is missing")));
    }
    Ok(())
}

/// Returns up to `max_pages` free pages (all with `None`) to the file system: `auto_vacuum`
/// is incremental. SQLite frees one page per step of `PRAGMA incremental_vacuum`, each step
/// a result row, so the pragma is stepped to its end (run once, as by `execute_batch`, it
/// freed a single page).
pub(crate) fn give_back_free_pages(conn: &Connection, max_pages: Option<u32>) -> Result<()> {
    let mut stmt = conn.prepare(&format!(
        "PRAGMA incremental_vacuum({})",
        max_pages.unwrap_or(0)
    ))?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

/// The store's layout (`PRAGMA user_version`).
pub(crate) fn layout(conn: &Connection) -> Result<i64> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

fn table_exists(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Name -> (type, SQL) of every schema object.
type Schema = std::collections::BTreeMap<String, (String, Option<String>)>;

fn schema_of(conn: &Connection) -> Result<Schema> {
    let mut stmt = conn.prepare("SELECT name, type, sql FROM sqlite_master")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
    Ok(rows.collect::<rusqlite::Result<Schema>>()?)
}

fn parse_key(bytes: &[u8]) -> Result<VerifyingKey> {
    let array =
        <[u8; 32]>::try_from(bytes).map_err(|_| Error::malformed("public key", "not 32 bytes"))?;
    VerifyingKey::from_bytes(&array).map_err(|e| Error::malformed("public key", e))
}

/// SQLite integers are i64; every u64 the log stores stays below 2^63 in practice, and a
/// value that does not is refused rather than wrapped.
pub(crate) fn to_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::malformed("integer", format!("{v} does not fit the store")))
}

pub(crate) fn to_u64(v: i64, what: &'static str) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::malformed(what, format!("negative value {v}")))
}
