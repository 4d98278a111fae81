//! The SQLite store (`sqlite.sql`), for one collector: one writer, WAL, every commit durable
//! before it returns.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use sensor_log::forward::BatchMessage;
use sensor_log::record::{Hash, HostId};
use sensor_log::time::wall_now_ns;
use sensor_log::BatchHeader;
use sensor_tpm::remote::Point;

use super::{
    batch_message, int, point, record_items, stored_host_id, uint, Alarm, BatchIndex, BatchQuery,
    Commit, Heard, Held, Host, HostSummary, Store, Verified,
};
use crate::error::{Error, Result};

const SCHEMA: &str = include_str!("sqlite.sql");

pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens (creating) the store at `path`: WAL, and every commit durable before it returns.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "trusted_schema", "OFF")?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore { conn })
    }
}

impl Store for SqliteStore {
    /// Pins `host`'s first key (an operator's approval, or first contact when allowed).
    fn enroll(&mut self, host: &Host, by: &str) -> Result<bool> {
        let added = self.conn.execute(
            "INSERT INTO hosts (host_id, key_epoch, public_key, enrolled_by, enrolled_ns)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (host_id) DO NOTHING",
            params![
                &host.host_id[..],
                int(host.key_epoch)?,
                &host.public_key.as_bytes()[..],
                by,
                int(wall_now_ns())?
            ],
        )?;
        Ok(added > 0)
    }

    fn host(&mut self, host_id: &HostId) -> Result<Option<Host>> {
        let row = self
            .conn
            .query_row(
                "SELECT key_epoch, public_key FROM hosts WHERE host_id = ?1",
                [&host_id[..]],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()?;
        row.map(|(key_epoch, key)| Host::from_row(host_id, key_epoch, &key))
            .transpose()
    }

    /// The state the host's next batch is verified against; `None` before its first batch.
    fn checkpoint(&mut self, host_id: &HostId) -> Result<Option<Held>> {
        let state: Option<String> = self
            .conn
            .query_row(
                "SELECT state FROM checkpoints WHERE host_id = ?1",
                [&host_id[..]],
                |r| r.get(0),
            )
            .optional()?;
        state.as_deref().map(Held::parse).transpose()
    }

    /// The digest of the batch held under `number` for the host.
    fn held_digest(&mut self, host_id: &HostId, number: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row(
                "SELECT digest FROM batches WHERE host_id = ?1 AND number = ?2",
                params![&host_id[..], int(number)?],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn replayed(&mut self, host_id: &HostId, below: u64, from: u64) -> Result<Option<Point>> {
        let row = self
            .conn
            .query_row(
                "SELECT number, digest, pcr FROM batches
                 WHERE host_id = ?1 AND number < ?2 AND number >= ?3 AND pcr IS NOT NULL
                 ORDER BY number DESC LIMIT 1",
                params![&host_id[..], int(below)?, int(from)?],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(n, d, p)| point(n, &d, &p)).transpose()
    }

    /// Stores a verified batch and advances the host's checkpoint, in one transaction.
    fn commit(&mut self, batch: &Verified<'_>) -> Result<Commit> {
        let h = batch.header;
        let records = record_items(batch.message)?;
        let index = BatchIndex::of(h, batch.message);
        // ',file_open,ptrace,': a kind is matched with its commas (sqlite.sql).
        let kinds = index.kinds.as_ref().map(|kinds| {
            kinds.iter().fold(",".to_string(), |mut text, k| {
                text.push_str(k);
                text.push(',');
                text
            })
        });
        let state = batch.after.text()?;
        let pcr = batch.replayed.map(|p| p.pcr.to_vec());
        let now = int(wall_now_ns())?;
        // A transaction of its own, or a savepoint inside a group. Its first statement
        // writes, so it holds the write lock before it reads `received`: max + 1 is
        // serialized, and batches become visible in `received` order, which `events
        // --follow` relies on.
        let tx = self.conn.savepoint()?;
        let inserted = tx.execute(
            "INSERT INTO batches (host_id, number, epoch, first_seq, count, wall_ns, header,
                                  signature, digest, records, received_ns, min_wall, max_wall,
                                  kinds, received, pcr)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                     (SELECT COALESCE(MAX(received), 0) + 1 FROM batches), ?15)
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
                now,
                index.min_wall,
                index.max_wall,
                kinds,
                pcr
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
        let next = int(batch.after.log.next_batch)?;
        let advanced = match batch.before {
            Some(before) => tx.execute(
                "UPDATE checkpoints SET next_batch = ?2, state = ?3, updated_ns = ?4
                 WHERE host_id = ?1 AND next_batch = ?5",
                params![
                    &h.host_id[..],
                    next,
                    state,
                    now,
                    int(before.log.next_batch)?
                ],
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

    fn begin_group(&mut self) -> Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    fn end_group(&mut self) -> Result<()> {
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            // A failed COMMIT may leave the transaction open: nothing of it is kept.
            if !self.conn.is_autocommit() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Keeps a batch that conflicts with the one held under its number, as evidence.
    fn keep_fork(
        &mut self,
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
    fn raise(&mut self, alarm: &Alarm) -> Result<bool> {
        let added = self.conn.execute(
            "INSERT INTO alarms (host_id, kind, batch, detail, raised_ns)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            params![
                &alarm.host_id[..],
                alarm.kind,
                int(alarm.batch)?,
                alarm.detail,
                int(alarm.raised_ns)?
            ],
        )?;
        Ok(added > 0)
    }

    /// The host's alarms, oldest first.
    fn alarms(&mut self, host_id: &HostId) -> Result<Vec<Alarm>> {
        let mut stmt = self.conn.prepare(
            "SELECT kind, batch, detail, raised_ns FROM alarms WHERE host_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([&host_id[..]], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        rows.map(|row| {
            let (kind, batch, detail, raised) = row?;
            Ok(Alarm {
                host_id: *host_id,
                kind,
                batch: uint(batch)?,
                detail,
                raised_ns: uint(raised)?,
            })
        })
        .collect()
    }

    /// (number, record count) of every batch held for the host, in order.
    fn held(&mut self, host_id: &HostId) -> Result<Vec<(u64, u64)>> {
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
    fn forks(&mut self, host_id: &HostId) -> Result<Vec<u64>> {
        let mut stmt = self
            .conn
            .prepare("SELECT number FROM forks WHERE host_id = ?1 ORDER BY number")?;
        let rows = stmt.query_map([&host_id[..]], |r| r.get::<_, i64>(0))?;
        rows.map(|n| uint(n?)).collect()
    }

    fn heard(&mut self) -> Result<Vec<Heard>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT h.host_id, c.next_batch, COALESCE(c.updated_ns, h.enrolled_ns)
             FROM hosts h LEFT JOIN checkpoints c ON c.host_id = h.host_id
             ORDER BY h.host_id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(host, next, heard)| {
                Ok(Heard {
                    host_id: stored_host_id(&host)?,
                    last_batch: next.map(uint).transpose()?.map(|n| n.saturating_sub(1)),
                    last_heard_ns: uint(heard)?,
                })
            })
            .collect()
    }

    /// Every enrolled host with what is held for it, by host id.
    fn hosts(&mut self) -> Result<Vec<HostSummary>> {
        let mut stmt = self.conn.prepare(
            "SELECT h.host_id, h.key_epoch, h.public_key, h.enrolled_by,
                    (SELECT COUNT(*) FROM batches b WHERE b.host_id = h.host_id),
                    (SELECT MAX(number) FROM batches b WHERE b.host_id = h.host_id),
                    (SELECT COUNT(*) FROM alarms a WHERE a.host_id = h.host_id),
                    COALESCE((SELECT MAX(received_ns) FROM batches b WHERE b.host_id = h.host_id),
                             h.enrolled_ns),
                    (SELECT state FROM checkpoints c WHERE c.host_id = h.host_id),
                    (SELECT COUNT(*) FROM alarms a WHERE a.host_id = h.host_id AND a.kind = 'tpm')
             FROM hosts h ORDER BY h.host_id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    Host::from_row(
                        &r.get::<_, Vec<u8>>(0)?,
                        r.get(1)?,
                        &r.get::<_, Vec<u8>>(2)?,
                    ),
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, i64>(9)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(
                |(host, enrolled_by, batches, last, alarms, heard, state, tpm)| {
                    Ok(HostSummary {
                        host: host?,
                        enrolled_by,
                        batches: uint(batches)?,
                        last_batch: last.map(uint).transpose()?,
                        alarms: uint(alarms)?,
                        last_heard_ns: uint(heard)?,
                        anchored: match state {
                            Some(s) => Held::parse(&s)?.tpm.anchored(),
                            None => false,
                        },
                        tpm_alarms: uint(tpm)?,
                    })
                },
            )
            .collect()
    }

    fn each_batch(
        &mut self,
        host_id: &HostId,
        each: &mut dyn FnMut(BatchMessage) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self.conn.prepare(
            "SELECT number, header, signature, records FROM batches WHERE host_id = ?1
             ORDER BY number",
        )?;
        let mut rows = stmt.query([&host_id[..]])?;
        while let Some(r) = rows.next()? {
            let number = uint(r.get(0)?)?;
            let header: Vec<u8> = r.get(1)?;
            let signature: Vec<u8> = r.get(2)?;
            let records: Vec<u8> = r.get(3)?;
            each(batch_message(number, &header, &signature, &records)?)?;
        }
        Ok(())
    }

    /// The cursor is `received`: everything up to the largest held when the call began,
    /// which no later commit can fall under.
    fn batches_after(
        &mut self,
        query: &BatchQuery,
        after: Option<u64>,
        each: &mut dyn FnMut(&HostId, BatchMessage) -> Result<()>,
    ) -> Result<u64> {
        let upto: i64 =
            self.conn
                .query_row("SELECT COALESCE(MAX(received), 0) FROM batches", [], |r| {
                    r.get(0)
                })?;
        let kinds = (!query.kinds.is_empty())
            .then(|| serde_json::to_string(&query.kinds))
            .transpose()
            .map_err(|e| Error::Corrupt(format!("kind names: {e}")))?;
        // Rows narrowed by host and time through (host_id, max_wall) or (max_wall), or by
        // arrival through `received` (a follow's poll, or no time bound: every row in
        // arrival order, no sort); the kinds between commas last. Without statistics SQLite
        // would walk `received` to skip sorting even under a time bound: `+received` keeps
        // it off that index then.
        let host = if query.host.is_some() {
            "host_id = ?1"
        } else {
            "?1 IS NULL"
        };
        let arrival = if after.is_none() && query.since_ns.is_some() {
            "+received"
        } else {
            "received"
        };
        let mut stmt = self.conn.prepare(&format!(
            "SELECT host_id, number, header, signature, records FROM batches
             WHERE {host} AND max_wall >= ?2 AND min_wall <= ?3
               AND {arrival} > ?4 AND {arrival} <= ?5
               AND (?6 IS NULL OR kinds IS NULL
                    OR EXISTS (SELECT 1 FROM json_each(?6) k
                               WHERE instr(kinds, ',' || k.value || ',') > 0))
             ORDER BY {arrival}"
        ))?;
        let mut rows = stmt.query(params![
            query.host.as_ref().map(|h| &h[..]),
            int(query.since_ns.unwrap_or(0))?,
            query.until_ns.map_or(Ok(i64::MAX), int)?,
            after.map_or(Ok(0), int)?,
            upto,
            kinds
        ])?;
        while let Some(r) = rows.next()? {
            let host_id = stored_host_id(&r.get::<_, Vec<u8>>(0)?)?;
            let number = uint(r.get(1)?)?;
            let header: Vec<u8> = r.get(2)?;
            let signature: Vec<u8> = r.get(3)?;
            let records: Vec<u8> = r.get(4)?;
            each(
                &host_id,
                batch_message(number, &header, &signature, &records)?,
            )?;
        }
        Ok(uint(upto)?.max(after.unwrap_or(0)))
    }
}
