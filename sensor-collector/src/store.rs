//! The collector's SQLite store (`schema.sql`): enrolled hosts, the checkpoint the next
//! batch of each host is verified against, the batches (signed bytes and record items
//! verbatim), forks kept as evidence, and alarms. All the crate's SQL is here.
//!
//! Idempotence, fork detection and continuity come from the database: a batch is inserted
//! only if no batch is held under its (host, number), and the checkpoint advances only from
//! the value the batch was verified against (compare and set), in one transaction.

use std::path::Path;

use ed25519_dalek::VerifyingKey;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use sensor_log::batch_file::BatchFileWriter;
use sensor_log::forward::BatchMessage;
use sensor_log::record::{Hash, HostId};
use sensor_log::time::wall_now_ns;
use sensor_log::{BatchHeader, Checkpoint};

use crate::error::{Error, Result};

const SCHEMA: &str = include_str!("schema.sql");

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
}

/// A verified batch, ready to store.
pub struct Verified<'a> {
    pub header: &'a BatchHeader,
    pub message: &'a BatchMessage,
    pub digest: Hash,
    /// The checkpoint the batch was verified against (`None`: the host's first batch) and the
    /// one after it.
    pub before: Option<&'a Checkpoint>,
    pub after: &'a Checkpoint,
}

pub struct Store {
    conn: Connection,
}

fn int(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::Corrupt(format!("{v} does not fit the store")))
}

fn uint(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::Corrupt(format!("negative value {v}")))
}

impl Store {
    /// Opens (creating) the store at `path`: WAL, and every commit durable before it returns.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "trusted_schema", "OFF")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn })
    }

    /// Pins `host`'s first key (an operator's approval, or first contact when allowed).
    pub fn enroll(&self, host: &Host, by: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO hosts (host_id, key_epoch, public_key, enrolled_by, enrolled_ns)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                &host.host_id[..],
                int(host.key_epoch)?,
                &host.public_key.as_bytes()[..],
                by,
                int(wall_now_ns())?
            ],
        )?;
        Ok(())
    }

    pub fn host(&self, host_id: &HostId) -> Result<Option<Host>> {
        let row = self
            .conn
            .query_row(
                "SELECT key_epoch, public_key FROM hosts WHERE host_id = ?1",
                [&host_id[..]],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()?;
        row.map(|(key_epoch, key)| {
            let key: [u8; 32] = key
                .try_into()
                .map_err(|_| Error::Corrupt("a pinned key is not 32 bytes".into()))?;
            Ok(Host {
                host_id: *host_id,
                key_epoch: uint(key_epoch)?,
                public_key: VerifyingKey::from_bytes(&key)
                    .map_err(|e| Error::Corrupt(format!("a pinned key: {e}")))?,
            })
        })
        .transpose()
    }

    /// The state the host's next batch is verified against; `None` before its first batch.
    pub fn checkpoint(&self, host_id: &HostId) -> Result<Option<Checkpoint>> {
        let state: Option<String> = self
            .conn
            .query_row(
                "SELECT state FROM checkpoints WHERE host_id = ?1",
                [&host_id[..]],
                |r| r.get(0),
            )
            .optional()?;
        state
            .map(|s| {
                serde_json::from_str(&s)
                    .map_err(|e| Error::Corrupt(format!("a checkpoint does not parse: {e}")))
            })
            .transpose()
    }

    /// The digest of the batch held under `number` for the host.
    pub fn held_digest(&self, host_id: &HostId, number: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row(
                "SELECT digest FROM batches WHERE host_id = ?1 AND number = ?2",
                params![&host_id[..], int(number)?],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Stores a verified batch and advances the host's checkpoint, in one transaction.
    pub fn commit(&mut self, batch: &Verified<'_>) -> Result<Commit> {
        let h = batch.header;
        let records = record_items(batch.message)?;
        let state = serde_json::to_string(batch.after)
            .map_err(|e| Error::Corrupt(format!("a checkpoint does not serialize: {e}")))?;
        let now = int(wall_now_ns())?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let inserted = tx.execute(
            "INSERT INTO batches (host_id, number, epoch, first_seq, count, wall_ns, header,
                                  signature, digest, records, received_ns)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (host_id, number) DO NOTHING",
            params![
                &h.host_id[..],
                int(h.number)?,
                int(h.epoch)?,
                int(h.first_seq)?,
                int(h.count)?,
                int(h.wall_ns)?,
                &batch.message.header,
                &batch.message.signature,
                &batch.digest[..],
                records,
                now
            ],
        )?;
        if inserted == 0 {
            let held: Vec<u8> = tx.query_row(
                "SELECT digest FROM batches WHERE host_id = ?1 AND number = ?2",
                params![&h.host_id[..], int(h.number)?],
                |r| r.get(0),
            )?;
            return Ok(if held == batch.digest {
                Commit::Duplicate
            } else {
                Commit::Fork
            });
        }
        let next = int(batch.after.next_batch)?;
        let advanced = match batch.before {
            Some(before) => tx.execute(
                "UPDATE checkpoints SET next_batch = ?2, state = ?3, updated_ns = ?4
                 WHERE host_id = ?1 AND next_batch = ?5",
                params![&h.host_id[..], next, state, now, int(before.next_batch)?],
            )?,
            None => tx.execute(
                "INSERT INTO checkpoints (host_id, next_batch, state, updated_ns)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (host_id) DO NOTHING",
                params![&h.host_id[..], next, state, now],
            )?,
        };
        if advanced == 0 {
            // Dropping the transaction rolls the batch row back.
            return Ok(Commit::Stale);
        }
        tx.commit()?;
        Ok(Commit::Stored)
    }

    /// Keeps a batch that conflicts with the one held under its number, as evidence.
    pub fn keep_fork(
        &self,
        header: &BatchHeader,
        message: &BatchMessage,
        digest: &Hash,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO forks (host_id, number, digest, header, signature, records, received_ns)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
            params![
                &header.host_id[..],
                int(header.number)?,
                &digest[..],
                &message.header,
                &message.signature,
                record_items(message)?,
                int(wall_now_ns())?
            ],
        )?;
        Ok(())
    }

    /// Raises an alarm; the same alarm for the same batch is kept once.
    pub fn raise(&self, alarm: &Alarm) -> Result<()> {
        self.conn.execute(
            "INSERT INTO alarms (host_id, kind, batch, detail, raised_ns)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            params![
                &alarm.host_id[..],
                alarm.kind,
                int(alarm.batch)?,
                alarm.detail,
                int(wall_now_ns())?
            ],
        )?;
        Ok(())
    }

    /// The host's alarms, oldest first.
    pub fn alarms(&self, host_id: &HostId) -> Result<Vec<Alarm>> {
        let mut stmt = self
            .conn
            .prepare("SELECT kind, batch, detail FROM alarms WHERE host_id = ?1 ORDER BY id")?;
        let rows = stmt.query_map([&host_id[..]], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        rows.map(|row| {
            let (kind, batch, detail) = row?;
            Ok(Alarm {
                host_id: *host_id,
                kind,
                batch: uint(batch)?,
                detail,
            })
        })
        .collect()
    }

    /// (number, record count) of every batch held for the host, in order.
    pub fn held(&self, host_id: &HostId) -> Result<Vec<(u64, u64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT number, count FROM batches WHERE host_id = ?1 ORDER BY number")?;
        let rows = stmt.query_map([&host_id[..]], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })?;
        rows.map(|row| {
            let (n, c) = row?;
            Ok((uint(n)?, uint(c)?))
        })
        .collect()
    }

    /// Numbers of the forks kept for the host.
    pub fn forks(&self, host_id: &HostId) -> Result<Vec<u64>> {
        let mut stmt = self
            .conn
            .prepare("SELECT number FROM forks WHERE host_id = ?1 ORDER BY number")?;
        let rows = stmt.query_map([&host_id[..]], |r| r.get::<_, i64>(0))?;
        rows.map(|n| uint(n?)).collect()
    }
}

impl Store {
    /// Every enrolled host with what is held for it, by host id.
    pub fn hosts(&self) -> Result<Vec<HostSummary>> {
        let mut stmt = self.conn.prepare(
            "SELECT h.host_id, h.enrolled_by,
                    (SELECT COUNT(*) FROM batches b WHERE b.host_id = h.host_id),
                    (SELECT MAX(number) FROM batches b WHERE b.host_id = h.host_id),
                    (SELECT COUNT(*) FROM alarms a WHERE a.host_id = h.host_id)
             FROM hosts h ORDER BY h.host_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        rows.map(|row| {
            let (id, enrolled_by, batches, last, alarms) = row?;
            let host_id: HostId = id
                .try_into()
                .map_err(|_| Error::Corrupt("a host id is not 16 bytes".into()))?;
            let host = self
                .host(&host_id)?
                .ok_or_else(|| Error::Corrupt("a host vanished".into()))?;
            Ok(HostSummary {
                host,
                enrolled_by,
                batches: uint(batches)?,
                last_batch: last.map(uint).transpose()?,
                alarms: uint(alarms)?,
            })
        })
        .collect()
    }

    /// Calls `each` with every batch held for the host, in number order, as it was received.
    pub fn each_batch(
        &self,
        host_id: &HostId,
        mut each: impl FnMut(BatchMessage) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self.conn.prepare(
            "SELECT header, signature, records, number FROM batches WHERE host_id = ?1 ORDER BY number",
        )?;
        let mut rows = stmt.query([&host_id[..]])?;
        while let Some(r) = rows.next()? {
            let header: Vec<u8> = r.get(0)?;
            let signature: Vec<u8> = r.get(1)?;
            let records: Vec<u8> = r.get(2)?;
            // The stored items are a batch message's body after its batch item: decoded by
            // the protocol's own bounded reader.
            let mut payload = BatchFileWriter::items(Vec::new());
            payload
                .batch(&header, &signature)
                .map_err(|e| Error::Corrupt(format!("a stored batch: {e}")))?;
            let mut payload = payload
                .finish()
                .map_err(|e| Error::Corrupt(format!("a stored batch: {e}")))?;
            payload.extend_from_slice(&records);
            match sensor_log::forward::decode(sensor_log::forward::TAG_BATCH, &payload) {
                Ok(sensor_log::forward::Message::Batch(message)) => each(message)?,
                Ok(_) | Err(_) => {
                    return Err(Error::Corrupt(format!(
                        "the record items stored with batch {} do not parse",
                        r.get::<_, i64>(3)?
                    )))
                }
            }
        }
        Ok(())
    }
}

/// The batch's records as batch-file record items, verbatim.
fn record_items(message: &BatchMessage) -> Result<Vec<u8>> {
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
