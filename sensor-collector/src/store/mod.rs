//! The collector's store: enrolled hosts, the checkpoint each host's next batch is verified
//! against, the batches (signed bytes and record items verbatim), forks kept as evidence,
//! and alarms; in SQLite (`sqlite.rs`, one collector) or PostgreSQL (`postgres.rs`, several
//! collectors sharing one database). Each keeps its SQL in its own file and schema.
//!
//! Idempotence, fork detection and continuity come from the database, never from a lock in
//! one process: a batch is inserted only if no batch is held under its (host, number), and
//! the checkpoint advances only from the value the batch was verified against (compare and
//! set), in one transaction.

mod postgres;
mod sqlite;

use ed25519_dalek::VerifyingKey;
use sensor_log::batch_file::BatchFileWriter;
use sensor_log::forward::{self, BatchMessage, Message};
use sensor_log::record::{Hash, HostId};
use sensor_log::{BatchHeader, Checkpoint, Record};
use sensor_tpm::remote::{Point, Replay};

use crate::error::{Error, Result};

pub use self::postgres::PostgresStore;
pub use self::sqlite::SqliteStore;

/// An enrolled host: the key that signs its log from its first batch on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub host_id: HostId,
    pub key_epoch: u64,
    pub public_key: VerifyingKey,
}

/// What storing a verified batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    Stored,
    /// The same batch was already held: nothing written.
    Duplicate,
    /// Another batch is held under this number: nothing written (the caller keeps it as a
    /// fork).
    Fork,
    /// The host's checkpoint moved since it was read (another session stored a batch):
    /// nothing written; verify again against the new one.
    Stale,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alarm {
    pub host_id: HostId,
    pub kind: String,
    pub batch: u64,
    pub detail: String,
    /// When the collector raised it, by its own clock.
    pub raised_ns: u64,
}

impl Host {
    /// A host from its stored columns, which must hold a 16-byte id and an Ed25519 key.
    pub(crate) fn from_row(host_id: &[u8], key_epoch: i64, public_key: &[u8]) -> Result<Host> {
        let host_id = stored_host_id(host_id)?;
        let key: [u8; 32] = public_key
            .try_into()
            .map_err(|_| Error::Corrupt("a pinned key is not 32 bytes".into()))?;
        Ok(Host {
            host_id,
            key_epoch: uint(key_epoch)?,
            public_key: VerifyingKey::from_bytes(&key)
                .map_err(|e| Error::Corrupt(format!("a pinned key: {e}")))?,
        })
    }
}

/// What the collector holds for a host between two batches, stored as one JSON text: the
/// log verifier's checkpoint and the TPM replay (docs/tpm.md, "The collector as remote
/// verifier"), advanced together in the transaction that stores the batch.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Held {
    #[serde(flatten)]
    pub log: Checkpoint,
    /// Absent in a checkpoint written before anchoring was checked: nothing replayed yet.
    #[serde(default)]
    pub tpm: Replay,
}

impl Held {
    pub(crate) fn parse(state: &str) -> Result<Held> {
        serde_json::from_str(state)
            .map_err(|e| Error::Corrupt(format!("a checkpoint does not parse: {e}")))
    }

    pub(crate) fn text(&self) -> Result<String> {
        serde_json::to_string(self)
            .map_err(|e| Error::Corrupt(format!("a checkpoint does not serialize: {e}")))
    }
}

/// A host as `sensor-collector hosts` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSummary {
    pub host: Host,
    pub enrolled_by: String,
    /// Batches held, and the newest one's number.
    pub batches: u64,
    pub last_batch: Option<u64>,
    pub alarms: u64,
    /// When the collector last stored a batch of the host (its enrollment before the first).
    pub last_heard_ns: u64,
    /// A replay base of the host's current TPM boot cycle is held: its quotes are checked.
    pub anchored: bool,
    /// `tpm` alarms raised for the host.
    pub tpm_alarms: u64,
}

/// When a host was last heard, for the silence sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heard {
    pub host_id: HostId,
    /// The newest batch held.
    pub last_batch: Option<u64>,
    /// When the collector last stored a batch of the host (its enrollment before the first).
    pub last_heard_ns: u64,
}

/// A verified batch, ready to store.
pub struct Verified<'a> {
    pub header: &'a BatchHeader,
    pub message: &'a BatchMessage,
    pub digest: Hash,
    /// The checkpoint the batch was verified against (`None`: the host's first batch) and the
    /// one after it.
    pub before: Option<&'a Held>,
    pub after: &'a Held,
    /// The batch's place in the TPM replay, kept beside it for the quote that names it.
    pub replayed: Option<Point>,
}

/// What a batch row is found by (`sensor-collector events`), from its decoded records, filled
/// when the batch is stored: the range of its records' wall times and their kinds. It only
/// narrows the rows a query reads; the decoded records decide what is shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchIndex {
    pub min_wall: i64,
    pub max_wall: i64,
    /// Sorted distinct kind names; `None` when not known, which every kind filter matches.
    pub kinds: Option<Vec<String>>,
}

impl BatchIndex {
    /// The index of a verified batch. The verifier decodes only a record's header and the
    /// log's own records, so an event it accepted may still not decode here (a kind this
    /// build does not know, from a newer agent): the batch is kept all the same, and indexed
    /// so that every query reads it (all of time, kinds unknown); `events` then says which
    /// records it could not show.
    pub fn of(header: &BatchHeader, message: &BatchMessage) -> BatchIndex {
        BatchIndex::of_records(header.wall_ns, &message.records)
    }

    /// The index of records in a batch sealed at `wall_ns`.
    fn of_records(wall_ns: u64, records: &[Vec<u8>]) -> BatchIndex {
        let wall = i64::try_from(wall_ns).unwrap_or(i64::MAX);
        let mut index = BatchIndex {
            min_wall: wall,
            max_wall: wall,
            kinds: Some(Vec::new()),
        };
        for (i, bytes) in records.iter().enumerate() {
            let Ok(record) = Record::decode(bytes) else {
                return BatchIndex {
                    min_wall: 0,
                    max_wall: i64::MAX,
                    kinds: None,
                };
            };
            let wall = i64::try_from(record.header.wall_ns).unwrap_or(i64::MAX);
            if i == 0 {
                (index.min_wall, index.max_wall) = (wall, wall);
            }
            index.min_wall = index.min_wall.min(wall);
            index.max_wall = index.max_wall.max(wall);
            if let Some(kinds) = index.kinds.as_mut() {
                kinds.push(record.body.kind_name().to_string());
            }
        }
        if let Some(kinds) = index.kinds.as_mut() {
            kinds.sort_unstable();
            kinds.dedup();
        }
        index
    }
}

/// The batch rows `events` reads: those that may hold a record of `host` (all hosts when
/// `None`) within the time bounds and of one of `kinds` (any when empty).
#[derive(Clone, Debug, Default)]
pub struct BatchQuery {
    pub host: Option<HostId>,
    pub since_ns: Option<u64>,
    pub until_ns: Option<u64>,
    pub kinds: Vec<String>,
}

/// What the ingest and the commands need of a store.
pub trait Store: Send {
    /// Pins `host`'s first key (an operator's approval, or first contact when allowed);
    /// `false` when the host was enrolled already (by another session or collector): the key
    /// pinned first stays.
    fn enroll(&mut self, host: &Host, by: &str) -> Result<bool>;
    fn host(&mut self, host_id: &HostId) -> Result<Option<Host>>;
    /// The state the host's next batch is verified against; `None` before its first batch.
    fn checkpoint(&mut self, host_id: &HostId) -> Result<Option<Held>>;
    /// The digest of the batch held under `number` for the host.
    fn held_digest(&mut self, host_id: &HostId, number: u64) -> Result<Option<Vec<u8>>>;
    /// The newest batch held for the host with `from <= number < below` that was replayed
    /// (its PCR kept when it was stored).
    fn replayed(&mut self, host_id: &HostId, below: u64, from: u64) -> Result<Option<Point>>;
    /// Stores a verified batch and advances the host's checkpoint, in one transaction (a
    /// savepoint inside a group).
    fn commit(&mut self, batch: &Verified<'_>) -> Result<Commit>;
    /// Opens a group: what the calls until [`Store::end_group`] write is committed together,
    /// durably, at its end (SQLite: one transaction, one fsync for many batches). A store
    /// whose commits are cheap to run side by side (PostgreSQL: one connection per worker,
    /// WAL flushes already grouped by the server) keeps committing each call on its own.
    fn begin_group(&mut self) -> Result<()> {
        Ok(())
    }
    /// Commits the group; on `Err`, nothing written since [`Store::begin_group`] is kept.
    fn end_group(&mut self) -> Result<()> {
        Ok(())
    }
    /// Keeps a batch that conflicts with the one held under its number, as evidence.
    fn keep_fork(
        &mut self,
        header: &BatchHeader,
        message: &BatchMessage,
        digest: &Hash,
    ) -> Result<()>;
    /// Raises an alarm; the same alarm for the same batch is kept once (the first): `false`
    /// when it was already raised.
    fn raise(&mut self, alarm: &Alarm) -> Result<bool>;
    /// The host's alarms, oldest first.
    fn alarms(&mut self, host_id: &HostId) -> Result<Vec<Alarm>>;
    /// (number, record count) of every batch held for the host, in order.
    fn held(&mut self, host_id: &HostId) -> Result<Vec<(u64, u64)>>;
    /// Numbers of the forks kept for the host.
    fn forks(&mut self, host_id: &HostId) -> Result<Vec<u64>>;
    /// Every enrolled host with what is held for it, by host id.
    fn hosts(&mut self) -> Result<Vec<HostSummary>>;
    /// Every enrolled host, by host id, with its newest batch and when it was last heard, read
    /// from `hosts` and `checkpoints` alone: the commit that stores a batch advances the
    /// host's checkpoint with the batch's `received_ns`. The silence sweep runs it every few
    /// seconds on a store worker, so its cost must not grow with the batches held, as that of
    /// `hosts` (which counts them) does.
    fn heard(&mut self) -> Result<Vec<Heard>>;
    /// Calls `each` with every batch held for the host, in number order, as received.
    fn each_batch(
        &mut self,
        host_id: &HostId,
        each: &mut dyn FnMut(BatchMessage) -> Result<()>,
    ) -> Result<()>;
    /// Calls `each` with every batch held that `query` selects, in the order they arrived,
    /// from the cursor `after` on (`None`: from the first), and returns the cursor to go on
    /// from (`events --follow`): a batch committed later, by any collector, comes after it.
    fn batches_after(
        &mut self,
        query: &BatchQuery,
        after: Option<u64>,
        each: &mut dyn FnMut(&HostId, BatchMessage) -> Result<()>,
    ) -> Result<u64>;
}

/// Prepares the store a URL names (`sensor-collector db init`): SQLite creates its schema on
/// open; PostgreSQL's is created by the database's owner, who grants `role` what collectors
/// need.
pub fn init(url: &str, role: Option<&str>) -> Result<()> {
    match url.strip_prefix("sqlite:") {
        Some(path) => SqliteStore::open(std::path::Path::new(path)).map(drop),
        None => PostgresStore::init(url, role),
    }
}

/// Opens the store a URL names: `sqlite:PATH`, or a PostgreSQL connection string
/// (`postgresql://…` or `host=… user=… dbname=…`).
pub fn open(url: &str) -> Result<Box<dyn Store>> {
    match url.strip_prefix("sqlite:") {
        Some(path) => Ok(Box::new(SqliteStore::open(std::path::Path::new(path))?)),
        None => Ok(Box::new(PostgresStore::connect(url)?)),
    }
}

/// A stored host id, which must be 16 bytes.
pub(crate) fn stored_host_id(bytes: &[u8]) -> Result<HostId> {
    bytes
        .try_into()
        .map_err(|_| Error::Corrupt("a host id is not 16 bytes".into()))
}

/// A replayed batch from its stored number, digest and PCR.
pub(crate) fn point(number: i64, digest: &[u8], pcr: &[u8]) -> Result<Point> {
    let hash = |b: &[u8]| -> Result<Hash> {
        b.try_into()
            .map_err(|_| Error::Corrupt("a stored digest or PCR is not 32 bytes".into()))
    };
    Ok(Point {
        number: uint(number)?,
        digest: hash(digest)?,
        pcr: hash(pcr)?,
    })
}

pub(crate) fn int(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::Corrupt(format!("{v} does not fit the store")))
}

pub(crate) fn uint(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::Corrupt(format!("negative value {v}")))
}

/// A stored batch read back as the message it arrived in, by the protocol's own bounded
/// reader.
pub(crate) fn batch_message(
    number: u64,
    header: &[u8],
    signature: &[u8],
    records: &[u8],
) -> Result<BatchMessage> {
    let corrupt = || {
        Error::Corrupt(format!(
            "the record items stored with batch {number} do not parse"
        ))
    };
    let mut payload = BatchFileWriter::items(Vec::new());
    payload.batch(header, signature).map_err(|_| corrupt())?;
    let mut payload = payload.finish().map_err(|_| corrupt())?;
    payload.extend_from_slice(records);
    match forward::decode(forward::TAG_BATCH, &payload) {
        Ok(Message::Batch(message)) => Ok(message),
        Ok(_) | Err(_) => Err(corrupt()),
    }
}

/// The batch's records as batch-file record items, verbatim.
pub(crate) fn record_items(message: &BatchMessage) -> Result<Vec<u8>> {
    let mut items = BatchFileWriter::items(Vec::new());
    for record in &message.records {
        items
            .record(record)
            .map_err(|e| Error::Corrupt(format!("a record item: {e}")))?;
    }
    items
        .finish()
        .map_err(|e| Error::Corrupt(format!("record items: {e}")))
}

#[cfg(test)]
mod tests {
    use super::BatchIndex;

    #[test]
    fn a_batch_is_indexed_by_its_decoded_records() {
        let [start, event] = sensor_log::vectors::records();
        let bytes = |r: &sensor_log::Record| r.encode().expect("encode");
        let index = BatchIndex::of_records(7, &[bytes(&event), bytes(&start), bytes(&event)]);
        let walls = [start.header.wall_ns, event.header.wall_ns].map(|w| w as i64);
        assert_eq!(
            index,
            BatchIndex {
                min_wall: walls[0].min(walls[1]),
                max_wall: walls[0].max(walls[1]),
                kinds: Some(vec![
                    "epoch_start".to_string(),
                    event.body.kind_name().to_string()
                ]),
            }
        );
        // An empty batch: its header's time, no kinds.
        let empty = BatchIndex::of_records(7, &[]);
        assert_eq!((empty.min_wall, empty.max_wall), (7, 7));
        assert_eq!(empty.kinds, Some(Vec::new()));
    }

    /// A record the verifier accepted (it checks an event's header, not its body) that this
    /// build cannot decode: the batch is found by every query, never hidden by its index.
    #[test]
    fn a_record_that_does_not_decode_makes_the_batch_match_every_query() {
        let [_, event] = sensor_log::vectors::records();
        let mut unknown = event.encode().expect("encode");
        let last = unknown.len() - 1;
        unknown.truncate(last);
        let index = BatchIndex::of_records(7, &[event.encode().expect("encode"), unknown]);
        assert_eq!(
            index,
            BatchIndex {
                min_wall: 0,
                max_wall: i64::MAX,
                kinds: None,
            }
        );
    }
}
