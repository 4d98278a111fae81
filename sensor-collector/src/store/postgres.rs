//! The PostgreSQL store (`postgres.sql`), for fleets: several collector processes against
//! one database. Continuity and idempotence rest on the database alone: the primary key of
//! `batches` makes a second insert of (host, number) wait for the first transaction and then
//! find its row, and the checkpoint's compare-and-set (`WHERE next_batch = $before`) lets
//! exactly one collector advance a host; the loser's transaction is rolled back (`Stale`).
//! Commits are durable (`synchronous_commit` is left on).

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, IsolationLevel, NoTls};
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

const SCHEMA: &str = include_str!("postgres.sql");

/// Advisory lock key under which collectors create the schema, one at a time.
const SCHEMA_LOCK: i64 = 0x5e05_0c01;

pub struct PostgresStore {
    client: Client,
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Error {
        Error::Postgres(e)
    }
}

/// What the collector's database role may do: add batches, forks and alarms, and read;
/// move checkpoints and enroll hosts. Never change or remove an event row.
const GRANTS: &str = "
    GRANT SELECT, INSERT ON batches, forks, alarms TO {role};
    GRANT SELECT, INSERT, UPDATE ON checkpoints TO {role};
    GRANT SELECT, INSERT ON hosts TO {role};
";

impl PostgresStore {
    /// Creates the schema (as the database's owner: `sensor-collector db init`) and grants
    /// `role`, the role collectors connect as, what `GRANTS` says.
    pub fn init(url: &str, role: Option<&str>) -> Result<()> {
        let mut client = Client::connect(url, NoTls)?;
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
        tx.batch_execute(SCHEMA)?;
        if let Some(role) = role {
            if role.is_empty()
                || !role
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(Error::Corrupt(format!(
                    "role {role:?}: a role name here is lower-case letters, digits and _"
                )));
            }
            tx.batch_execute(&GRANTS.replace("{role}", role))?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Connects (no TLS: a local socket, or a network the operator secures) to a database
    /// `init` prepared.
    pub fn connect(url: &str) -> Result<PostgresStore> {
        let mut client = Client::connect(url, NoTls)?;
        if let Err(e) = client.batch_execute("SELECT 1 FROM batches LIMIT 0") {
            return Err(Error::Corrupt(format!(
                "{}; is the schema there? (sensor-collector db init)",
                Error::Postgres(e)
            )));
        }
        Ok(PostgresStore { client })
    }
}

impl Store for PostgresStore {
    fn enroll(&mut self, host: &Host, by: &str) -> Result<bool> {
        let added = self.client.execute(
            "INSERT INTO hosts (host_id, key_epoch, public_key, enrolled_by, enrolled_ns)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (host_id) DO NOTHING",
            &[
                &&host.host_id[..],
                &int(host.key_epoch)?,
                &&host.public_key.as_bytes()[..],
                &by,
                &int(wall_now_ns())?,
            ],
        )?;
        Ok(added > 0)
    }

    fn host(&mut self, host_id: &HostId) -> Result<Option<Host>> {
        let row = self.client.query_opt(
            "SELECT key_epoch, public_key FROM hosts WHERE host_id = $1",
            &[&&host_id[..]],
        )?;
        row.map(|r| Host::from_row(host_id, r.get(0), r.get(1)))
            .transpose()
    }

    fn checkpoint(&mut self, host_id: &HostId) -> Result<Option<Held>> {
        let row = self.client.query_opt(
            "SELECT state FROM checkpoints WHERE host_id = $1",
            &[&&host_id[..]],
        )?;
        row.map(|r| Held::parse(r.get::<_, &str>(0))).transpose()
    }

    fn replayed(&mut self, host_id: &HostId, below: u64, from: u64) -> Result<Option<Point>> {
        let row = self.client.query_opt(
            "SELECT number, digest, pcr FROM batches
             WHERE host_id = $1 AND number < $2 AND number >= $3 AND pcr IS NOT NULL
             ORDER BY number DESC LIMIT 1",
            &[&&host_id[..], &int(below)?, &int(from)?],
        )?;
        row.map(|r| point(r.get(0), r.get(1), r.get(2))).transpose()
    }

    fn held_digest(&mut self, host_id: &HostId, number: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .client
            .query_opt(
                "SELECT digest FROM batches WHERE host_id = $1 AND number = $2",
                &[&&host_id[..], &int(number)?],
            )?
            .map(|r| r.get(0)))
    }

    fn commit(&mut self, batch: &Verified<'_>) -> Result<Commit> {
        let h = batch.header;
        let records = record_items(batch.message)?;
        let index = BatchIndex::of(h, batch.message);
        let state = batch.after.text()?;
        let pcr = batch.replayed.map(|p| p.pcr.to_vec());
        let now = int(wall_now_ns())?;
        let host = &h.host_id[..];
        let number = int(h.number)?;
        let mut tx = self.client.transaction()?;
        let inserted = tx.execute(
            "INSERT INTO batches (host_id, number, epoch, first_seq, count, wall_ns, header,
                                  signature, digest, records, received_ns, min_wall, max_wall,
                                  kinds, pcr)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT (host_id, number) DO NOTHING",
            &[
                &host,
                &number,
                &int(h.epoch)?,
                &int(h.first_seq)?,
                &int(h.count)?,
                &int(h.wall_ns)?,
                &batch.message.header,
                &batch.message.signature,
                &&batch.digest[..],
                &records,
                &now,
                &index.min_wall,
                &index.max_wall,
                &index.kinds,
                &pcr,
            ],
        )?;
        if inserted == 0 {
            let held: Vec<u8> = tx
                .query_one(
                    "SELECT digest FROM batches WHERE host_id = $1 AND number = $2",
                    &[&host, &number],
                )?
                .get(0);
            return Ok(if held == batch.digest {
                Commit::Duplicate
            } else {
                Commit::Fork
            });
        }
        let next = int(batch.after.log.next_batch)?;
        let advanced = match batch.before {
            Some(before) => tx.execute(
                "UPDATE checkpoints SET next_batch = $2, state = $3, updated_ns = $4
                 WHERE host_id = $1 AND next_batch = $5",
                &[&host, &next, &state, &now, &int(before.log.next_batch)?],
            )?,
            None => tx.execute(
                "INSERT INTO checkpoints (host_id, next_batch, state, updated_ns)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (host_id) DO NOTHING",
                &[&host, &next, &state, &now],
            )?,
        };
        if advanced == 0 {
            // Dropping the transaction rolls the batch row back.
            return Ok(Commit::Stale);
        }
        tx.commit()?;
        Ok(Commit::Stored)
    }

    fn keep_fork(
        &mut self,
        header: &BatchHeader,
        message: &BatchMessage,
        digest: &Hash,
    ) -> Result<()> {
        self.client.execute(
            "INSERT INTO forks (host_id, number, digest, header, signature, records, received_ns)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            &[
                &&header.host_id[..],
                &int(header.number)?,
                &&digest[..],
                &message.header,
                &message.signature,
                &record_items(message)?,
                &int(wall_now_ns())?,
            ],
        )?;
        Ok(())
    }

    fn raise(&mut self, alarm: &Alarm) -> Result<bool> {
        let added = self.client.execute(
            "INSERT INTO alarms (host_id, kind, batch, detail, raised_ns)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[
                &&alarm.host_id[..],
                &alarm.kind,
                &int(alarm.batch)?,
                &alarm.detail,
                &int(alarm.raised_ns)?,
            ],
        )?;
        Ok(added > 0)
    }

    fn alarms(&mut self, host_id: &HostId) -> Result<Vec<Alarm>> {
        self.client
            .query(
                "SELECT kind, batch, detail, raised_ns FROM alarms WHERE host_id = $1 ORDER BY id",
                &[&&host_id[..]],
            )?
            .into_iter()
            .map(|r| {
                Ok(Alarm {
                    host_id: *host_id,
                    kind: r.get(0),
                    batch: uint(r.get(1))?,
                    detail: r.get(2),
                    raised_ns: uint(r.get(3))?,
                })
            })
            .collect()
    }

    fn held(&mut self, host_id: &HostId) -> Result<Vec<(u64, u64)>> {
        self.client
            .query(
                "SELECT number, count FROM batches WHERE host_id = $1 ORDER BY number",
                &[&&host_id[..]],
            )?
            .into_iter()
            .map(|r| Ok((uint(r.get(0))?, uint(r.get(1))?)))
            .collect()
    }

    fn forks(&mut self, host_id: &HostId) -> Result<Vec<u64>> {
        self.client
            .query(
                "SELECT number FROM forks WHERE host_id = $1 ORDER BY number",
                &[&&host_id[..]],
            )?
            .into_iter()
            .map(|r| uint(r.get(0)))
            .collect()
    }

    fn heard(&mut self) -> Result<Vec<Heard>> {
        self.client
            .query(
                "SELECT h.host_id, c.next_batch, COALESCE(c.updated_ns, h.enrolled_ns)
                 FROM hosts h LEFT JOIN checkpoints c ON c.host_id = h.host_id
                 ORDER BY h.host_id",
                &[],
            )?
            .into_iter()
            .map(|r| {
                Ok(Heard {
                    host_id: stored_host_id(r.get(0))?,
                    last_batch: r
                        .get::<_, Option<i64>>(1)
                        .map(uint)
                        .transpose()?
                        .map(|n| n.saturating_sub(1)),
                    last_heard_ns: uint(r.get(2))?,
                })
            })
            .collect()
    }

    fn hosts(&mut self) -> Result<Vec<HostSummary>> {
        let rows = self.client.query(
            "SELECT h.host_id, h.key_epoch, h.public_key, h.enrolled_by,
                    (SELECT COUNT(*) FROM batches b WHERE b.host_id = h.host_id),
                    (SELECT MAX(number) FROM batches b WHERE b.host_id = h.host_id),
                    (SELECT COUNT(*) FROM alarms a WHERE a.host_id = h.host_id),
                    COALESCE((SELECT MAX(received_ns) FROM batches b WHERE b.host_id = h.host_id),
                             h.enrolled_ns),
                    (SELECT state FROM checkpoints c WHERE c.host_id = h.host_id),
                    (SELECT COUNT(*) FROM alarms a WHERE a.host_id = h.host_id AND a.kind = 'tpm')
             FROM hosts h ORDER BY h.host_id",
            &[],
        )?;
        rows.into_iter()
            .map(|r| {
                Ok(HostSummary {
                    host: Host::from_row(r.get(0), r.get(1), r.get(2))?,
                    enrolled_by: r.get(3),
                    batches: uint(r.get(4))?,
                    last_batch: r.get::<_, Option<i64>>(5).map(uint).transpose()?,
                    alarms: uint(r.get(6))?,
                    last_heard_ns: uint(r.get(7))?,
                    anchored: match r.get::<_, Option<&str>>(8) {
                        Some(s) => Held::parse(s)?.tpm.anchored(),
                        None => false,
                    },
                    tpm_alarms: uint(r.get(9))?,
                })
            })
            .collect()
    }

    fn each_batch(
        &mut self,
        host_id: &HostId,
        each: &mut dyn FnMut(BatchMessage) -> Result<()>,
    ) -> Result<()> {
        let rows = self.client.query(
            "SELECT number, header, signature, records FROM batches WHERE host_id = $1
             ORDER BY number",
            &[&&host_id[..]],
        )?;
        for r in rows {
            let number = uint(r.get(0))?;
            each(batch_message(
                number,
                r.get::<_, &[u8]>(1),
                r.get::<_, &[u8]>(2),
                r.get::<_, &[u8]>(3),
            )?)?;
        }
        Ok(())
    }

    /// The cursor is a transaction id (postgres.sql): the rows of every transaction below
    /// the oldest one running when the call began, which are all settled, read once.
    fn batches_after(
        &mut self,
        query: &BatchQuery,
        after: Option<u64>,
        each: &mut dyn FnMut(&HostId, BatchMessage) -> Result<()>,
    ) -> Result<u64> {
        let mut tx = self
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let upto: i64 = tx
            .query_one(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
                &[],
            )?
            .get(0);
        let from = after.map_or(Ok(0), int)?;
        let host = if query.host.is_some() {
            "host_id = $1"
        } else {
            "$1::bytea IS NULL"
        };
        let sql = format!(
            "SELECT host_id, number, header, signature, records FROM batches
             WHERE {host} AND max_wall >= $2 AND min_wall <= $3
               AND xact >= $4 AND xact < $5
               AND ($6::text[] IS NULL OR kinds IS NULL OR kinds && $6)
             ORDER BY received"
        );
        let host_id = query.host.as_ref().map(|h| &h[..]);
        let since = int(query.since_ns.unwrap_or(0))?;
        let until = query.until_ns.map_or(Ok(i64::MAX), int)?;
        let kinds = (!query.kinds.is_empty()).then_some(&query.kinds);
        let params: [&(dyn ToSql + Sync); 6] = [&host_id, &since, &until, &from, &upto, &kinds];
        let mut rows = tx.query_raw(&sql, params)?;
        while let Some(r) = rows.next()? {
            let host_id = stored_host_id(r.get(0))?;
            each(
                &host_id,
                batch_message(
                    uint(r.get(1))?,
                    r.get::<_, &[u8]>(2),
                    r.get::<_, &[u8]>(3),
                    r.get::<_, &[u8]>(4),
                )?,
            )?;
        }
        drop(rows);
        tx.commit()?;
        Ok(uint(upto)?.max(after.unwrap_or(0)))
    }
}
