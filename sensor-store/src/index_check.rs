//! `verify`'s check of the unsigned query index (`index.rs`) against the signed records: on a
//! second thread, fed by the walk over signatures and chain with each batch it verified.

use std::collections::HashMap;

use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OptionalExtension};

use crate::error::Result;
use crate::index::{decode_offsets, each_term, offsets_column, offsets_sql, Dim, Term, DIMS};
use crate::store::Store;
use sensor_log::record::Record;
use sensor_log::{Failure, Position, Reason};

/// Term ids as a query finds them (`SELECT id FROM terms WHERE dim = ? AND value = ?`), looked
/// up once per distinct value the records carry, never by loading the table (rows no record
/// names cost nothing), with the last hit of each dimension remembered: consecutive records
/// mostly repeat their exe, user and path.
struct TermIds<'c> {
    conn: &'c Connection,
    text: [HashMap<Vec<u8>, Option<i64>>; DIMS],
    int: [HashMap<i64, Option<i64>>; DIMS],
    last_text: [Option<(Vec<u8>, i64)>; DIMS],
    last_int: [Option<(i64, i64)>; DIMS],
}

impl<'c> TermIds<'c> {
    fn new(conn: &'c Connection) -> TermIds<'c> {
        TermIds {
            conn,
            text: Default::default(),
            int: Default::default(),
            last_text: Default::default(),
            last_int: Default::default(),
        }
    }

    fn id(&mut self, dim: Dim, term: Term<'_>) -> Result<Option<i64>> {
        let slot = dim as usize - 1;
        let id = match term {
            Term::Text(t) => {
                if let Some((last, id)) = &self.last_text[slot] {
                    if last == t {
                        return Ok(Some(*id));
                    }
                }
                let id = match self.text[slot].get(t) {
                    Some(id) => *id,
                    None => {
                        // Signed records hold UTF-8 only; anything else is no term.
                        let id = match std::str::from_utf8(t) {
                            Ok(text) => self.lookup(dim, &text)?,
                            Err(_) => None,
                        };
                        self.text[slot].insert(t.to_vec(), id);
                        id
                    }
                };
                if let Some(id) = id {
                    self.last_text[slot] = Some((t.to_vec(), id));
                }
                id
            }
            Term::Int(i) => {
                if let Some((last, id)) = self.last_int[slot] {
                    if last == i {
                        return Ok(Some(id));
                    }
                }
                let id = match self.int[slot].get(&i) {
                    Some(id) => *id,
                    None => {
                        let id = self.lookup(dim, &i)?;
                        self.int[slot].insert(i, id);
                        id
                    }
                };
                if let Some(id) = id {
                    self.last_int[slot] = Some((i, id));
                }
                id
            }
        };
        Ok(id)
    }

    fn lookup(&self, dim: Dim, value: &dyn rusqlite::ToSql) -> Result<Option<i64>> {
        Ok(self
            .conn
            .prepare_cached("SELECT id FROM terms WHERE dim = ?1 AND value = ?2")?
            .query_row(rusqlite::params![dim as i64, value], |r| r.get(0))
            .optional()?)
    }
}

fn int(v: ValueRef<'_>) -> Option<i64> {
    match v {
        ValueRef::Integer(i) => Some(i),
        _ => None,
    }
}

/// One verified batch as the walk of `verify` read it, for the index check: its records'
/// bytes. The check hands it back emptied for the walk to fill again (no allocation, no page
/// faults per batch).
#[derive(Default)]
pub(crate) struct BatchRows {
    number: u64,
    first_seq: u64,
    count: u64,
    /// The records' bytes, back to back.
    bytes: Vec<u8>,
    /// Per record: seq, end of its bytes in `bytes`.
    records: Vec<(u64, usize)>,
}

/// Batches the walk may be ahead of the index check (bounds the memory in flight).
const FEED_DEPTH: usize = 4;

/// The walk's side of the index check: it copies the bytes of each record the walk verified
/// (already in memory: no second read of the blocks) and hands each batch over once
/// verified. The check on the other thread does the rest.
pub(crate) struct Feeder {
    sender: std::sync::mpsc::SyncSender<BatchRows>,
    returned: std::sync::mpsc::Receiver<BatchRows>,
    batch: BatchRows,
}

impl Feeder {
    pub(crate) fn begin(&mut self, number: u64, first_seq: u64, count: u64) {
        if let Ok(empty) = self.returned.try_recv() {
            self.batch = empty;
        }
        let b = &mut self.batch;
        (b.number, b.first_seq, b.count) = (number, first_seq, count);
        b.bytes.clear();
        b.records.clear();
    }

    /// A record of the current batch whose bytes the walk verified against its leaf.
    pub(crate) fn record(&mut self, seq: u64, bytes: &[u8]) {
        self.batch.bytes.extend_from_slice(bytes);
        self.batch.records.push((seq, self.batch.bytes.len()));
    }

    /// The current batch is verified: hand it over. (A check that already failed has
    /// stopped receiving; the walk goes on regardless.)
    pub(crate) fn end(&mut self) {
        let _ = self.sender.send(std::mem::take(&mut self.batch));
    }
}

/// The check's ends of the channels: verified batches from the walk, emptied ones back.
pub(crate) struct Fed {
    batches: std::sync::mpsc::Receiver<BatchRows>,
    give_back: std::sync::mpsc::Sender<BatchRows>,
}

/// Both ends of the feed between the walk and the check.
pub(crate) fn channels() -> (Feeder, Fed) {
    let (sender, batches) = std::sync::mpsc::sync_channel(FEED_DEPTH);
    let (give_back, returned) = std::sync::mpsc::channel();
    (
        Feeder {
            sender,
            returned,
            batch: BatchRows::default(),
        },
        Fed { batches, give_back },
    )
}

/// The postings table in `(batch, term)` order, read in step with the fed batches.
struct Postings<'s> {
    rows: rusqlite::Rows<'s>,
    /// A row read past the current batch.
    ahead: Option<PostingRow>,
}

/// batch, term, offsets (or what is wrong with them).
type PostingRow = (i64, i64, std::result::Result<Vec<u8>, String>);

impl Postings<'_> {
    fn next(&mut self) -> Result<Option<PostingRow>> {
        if let Some(row) = self.ahead.take() {
            return Ok(Some(row));
        }
        let Some(r) = self.rows.next()? else {
            return Ok(None);
        };
        Ok(Some((
            int(r.get_ref(0)?).unwrap_or(i64::MIN),
            int(r.get_ref(1)?).unwrap_or(i64::MIN),
            offsets_column(r, 2)?.map(<[u8]>::to_vec),
        )))
    }
}

/// A postings row naming a batch the store does not have.
fn orphan(conn: &Connection, batch: i64, term: i64) -> Result<Option<Failure>> {
    Ok(Some(index_failure(
        Position::Batch(u64::try_from(batch).unwrap_or(0)),
        format!(
            "a posting of {} names batch {batch}, which the log does not have",
            describe(conn, term)?
        ),
    )))
}

/// The offsets of one batch's records per term id, as the postings should list them.
/// Lists are reused from batch to batch; each dimension remembers its last term, so a run
/// of records sharing a value costs no hash lookup.
#[derive(Default)]
struct Expected {
    slot: HashMap<i64, usize>,
    lists: Vec<(i64, Vec<u32>)>,
    used: usize,
    last: [Option<(i64, usize)>; DIMS],
}

impl Expected {
    fn clear(&mut self) {
        self.slot.clear();
        for (_, list) in &mut self.lists[..self.used] {
            list.clear();
        }
        self.used = 0;
        self.last = [None; DIMS];
    }

    fn add(&mut self, dim: Dim, id: i64, offset: u32) {
        let dim = dim as usize - 1;
        let at = match self.last[dim] {
            Some((last, at)) if last == id => at,
            _ => {
                let at = *self.slot.entry(id).or_insert_with(|| {
                    if self.used == self.lists.len() {
                        self.lists.push((id, Vec::new()));
                    }
                    self.lists[self.used].0 = id;
                    self.used += 1;
                    self.used - 1
                });
                self.last[dim] = Some((id, at));
                at
            }
        };
        self.lists[at].1.push(offset);
    }

    /// The lists, ordered by term id like the postings of a batch.
    fn sorted(&mut self) -> &[(i64, Vec<u32>)] {
        let lists = &mut self.lists[..self.used];
        lists.sort_unstable_by_key(|(id, _)| *id);
        lists
    }
}

fn index_failure(position: Position, detail: String) -> Failure {
    Failure {
        position,
        reason: Reason::Modified,
        detail: format!("query index: {detail}"),
    }
}

/// Checks the query index against the records, for `verify`: every term of every record is
/// in `terms` under its exact value and type, and each batch's postings are exactly the
/// offsets of its records carrying each term (no posting missing, added, shortened,
/// lengthened or pointing outside its batch; none naming a batch the store does not have).
/// With this, a query that narrows by the index finds every record a full scan would, once
/// (docs/log-format.md, store check S4).
///
/// Runs on a second thread, fed by the walk with the bytes of every record of every batch
/// it verified, and reads the postings itself on its own connection `store`, in a read
/// transaction begun after the walk's. Rows are only ever appended (a new batch with its
/// postings) or pruned from the oldest end (a batch with its postings), in one transaction
/// each, so the two snapshots agree on every batch both hold; a batch the walk verified
/// that was pruned since is skipped (no query can show it either), and batches sealed since
/// are not the walk's to vouch for.
pub(crate) fn check(store: &Store, fed: Fed) -> Result<Option<Failure>> {
    let conn = &store.conn;
    let _snapshot = conn.unchecked_transaction()?;
    let mut postings = conn.prepare(&format!(
        "SELECT batch, term, {} FROM postings ORDER BY batch, term",
        offsets_sql()
    ))?;
    let mut postings = Postings {
        rows: postings.query([])?,
        ahead: None,
    };
    let mut held = conn.prepare("SELECT 1 FROM batches WHERE number = ?1")?;
    let mut ids = TermIds::new(conn);
    let mut expected = Expected::default();
    let mut batch_postings: Vec<(i64, std::result::Result<Vec<u8>, String>)> = Vec::new();
    let mut listed = Vec::new();
    let mut last = None;
    for b in fed.batches {
        let number = i64::try_from(b.number).unwrap_or(i64::MAX);
        last = Some(number);
        if !held.exists([number])? {
            let _ = fed.give_back.send(b);
            continue; // pruned since the walk read it
        }
        batch_postings.clear();
        while let Some((batch, term, offsets)) = postings.next()? {
            if batch > number {
                postings.ahead = Some((batch, term, offsets));
                break;
            }
            if batch < number {
                // Every batch before this one that this snapshot holds was fed before it.
                return orphan(conn, batch, term);
            }
            batch_postings.push((term, offsets));
        }
        expected.clear();
        let mut start = 0;
        for &(seq, end) in &b.records {
            let offset = u32::try_from(seq - b.first_seq).unwrap_or(u32::MAX);
            let bytes = &b.bytes[start..end];
            start = end;
            let decoded;
            let found = match terms_in_place(bytes) {
                Some((_, found)) => found,
                None => {
                    // A log-internal record (or an event this reader does not follow).
                    decoded = match Record::decode(bytes) {
                        Ok(record) => record,
                        Err(e) => {
                            return Ok(Some(Failure {
                                position: Position::Seq(seq),
                                reason: Reason::Modified,
                                detail: format!("signed record does not decode: {e}"),
                            }))
                        }
                    };
                    let mut found = [None; DIMS];
                    each_term(&decoded.body, |dim, term| {
                        found[dim as usize - 1] = Some((dim, term))
                    });
                    found
                }
            };
            for (dim, term) in found.into_iter().flatten() {
                let Some(id) = ids.id(dim, term)? else {
                    return Ok(Some(index_failure(
                        Position::Seq(seq),
                        format!(
                            "the terms table has no {} {term} (the record carries it): queries by {} would miss it",
                            dim.name(),
                            dim.name()
                        ),
                    )));
                };
                expected.add(dim, id, offset);
            }
        }
        if let Some(failure) = compare(conn, &b, &batch_postings, expected.sorted(), &mut listed)? {
            return Ok(Some(failure));
        }
        let _ = fed.give_back.send(b);
    }
    // Postings beyond the walk's last batch belong to batches sealed since, or to none.
    let stray = conn
        .query_row(
            "SELECT batch, term FROM postings
             WHERE batch > ?1 AND batch NOT IN (SELECT number FROM batches) LIMIT 1",
            [last.unwrap_or(i64::MIN)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match stray {
        Some((batch, term)) => orphan(conn, batch, term),
        None => Ok(None),
    }
}

/// A batch's postings against the offsets its records call for, both in term id order.
fn compare(
    conn: &Connection,
    b: &BatchRows,
    postings: &[(i64, std::result::Result<Vec<u8>, String>)],
    expected: &[(i64, Vec<u32>)],
    listed: &mut Vec<u64>,
) -> Result<Option<Failure>> {
    let here = Position::Batch(b.number);
    let seqs = |offsets: &mut dyn Iterator<Item = u64>| {
        offsets
            .map(|o| (b.first_seq + o).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let unposted = |term: i64, offsets: &[u32]| -> Result<Option<Failure>> {
        Ok(Some(index_failure(
            here,
            format!(
                "no posting lists seq {} under {}, which it carries: queries by it would miss the record",
                b.first_seq + u64::from(offsets[0]),
                describe(conn, term)?
            ),
        )))
    };
    let mut at = 0;
    for (term, blob) in postings {
        let term = *term;
        if let Some((missing, offsets)) = expected.get(at).filter(|(id, _)| *id < term) {
            return unposted(*missing, offsets);
        }
        listed.clear();
        let decoded = blob
            .as_deref()
            .map_err(String::clone)
            .and_then(|blob| decode_offsets(blob, b.count, |o| listed.push(o)));
        if let Err(e) = decoded {
            return Ok(Some(index_failure(
                here,
                format!("the posting of {} is malformed: {e}", describe(conn, term)?),
            )));
        }
        let want: &[u32] = match expected.get(at) {
            Some((id, offsets)) if *id == term => {
                at += 1;
                offsets
            }
            _ => &[],
        };
        if !listed
            .iter()
            .copied()
            .eq(want.iter().map(|&o| u64::from(o)))
        {
            return Ok(Some(index_failure(
                here,
                format!(
                    "the posting of {} lists seq [{}] but the records carrying it are seq [{}]",
                    describe(conn, term)?,
                    seqs(&mut listed.iter().copied()),
                    seqs(&mut want.iter().map(|&o| u64::from(o))),
                ),
            )));
        }
    }
    if let Some((missing, offsets)) = expected.get(at) {
        return unposted(*missing, offsets);
    }
    Ok(None)
}

/// The terms of one record by dimension slot.
type RecordTermValues<'a> = [Option<(Dim, Term<'a>)>; DIMS];

/// The terms of an event record read in place from its bytes, with its kind; `None` for
/// other records and anything that does not parse (the caller then decodes in full).
/// Decoding every event in full (a dozen allocations) would cost `verify` about half its
/// speed; this follows the layout of docs/log-format.md up to `file.path` and stops, and
/// `tests::terms_in_place_equal_decoded` keeps it equal to `each_term` on the decoded record.
pub(crate) fn terms_in_place(bytes: &[u8]) -> Option<(&'static str, RecordTermValues<'_>)> {
    let mut c = Cursor { bytes, at: 50 };
    if c.u32()? != sensor_log::record::BODY_TAG_EVENT {
        return None;
    }
    let kind = sensor_log::event::Kind::ALL
        .get(usize::try_from(c.u32()?).ok()?)?
        .as_str();
    let mut found = [None; DIMS];
    let mut put = |dim: Dim, term| found[dim as usize - 1] = Some((dim, term));
    put(Dim::Kind, Term::Text(kind.as_bytes()));
    c.skip_string()?; // time
    c.flag()?; // ok
    if c.flag()? {
        c.skip(4)?; // errno
    }
    if c.flag()? {
        let pid = c.u32()?;
        c.skip(6 * 4)?; // tid, ppid, uid, euid, gid, auid
        c.skip_string()?; // comm
        put(Dim::Pid, Term::Int(i64::from(pid)));
        put(Dim::Exe, Term::Text(c.bytes()?));
        c.skip_string()?; // cmdline
        for _ in 0..c.u64()? {
            c.skip_string()?; // ancestors
        }
    }
    if c.flag()? {
        put(Dim::User, Term::Text(c.bytes()?));
        if c.flag()? {
            put(Dim::Unit, Term::Text(c.bytes()?));
        }
        if c.flag()? {
            put(Dim::Container, Term::Text(c.bytes()?));
            c.skip_string()?; // runtime
        }
        if c.flag()? {
            c.skip_string()?; // pod_uid
        }
        put(Dim::Human, Term::Int(i64::from(c.flag()?)));
        c.skip_string()?; // human_reason
        if c.flag()? {
            c.skip_string()?; // owner
        }
    }
    if c.flag()? {
        put(Dim::Path, Term::Text(c.bytes()?));
    }
    Some((kind, found))
}

/// Reads the fixed-width little-endian encoding of docs/log-format.md; `None` past the end.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let taken = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(taken)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(drop)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// A `bool`, or an `Option`'s tag.
    fn flag(&mut self) -> Option<bool> {
        match self.take(1)? {
            [0] => Some(false),
            [1] => Some(true),
            _ => None,
        }
    }

    fn skip_string(&mut self) -> Option<()> {
        let n = usize::try_from(self.u64()?).ok()?;
        self.skip(n)
    }

    /// A `String`'s bytes.
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u64()?).ok()?;
        self.take(n)
    }
}

/// A term by its id, for failure details.
fn describe(conn: &Connection, id: i64) -> Result<String> {
    let term: Option<(i64, Value)> = conn
        .query_row("SELECT dim, value FROM terms WHERE id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let Some((dim, value)) = term else {
        return Ok(format!("term {id}, which the terms table does not have"));
    };
    let value = match &value {
        Value::Text(t) => Term::Text(t.as_bytes()).to_string(),
        Value::Integer(i) => Term::Int(*i).to_string(),
        other => format!("{other:?}"),
    };
    Ok(format!(
        "{} {value} (term {id})",
        Dim::from_column(dim).map_or("unknown dimension", Dim::name)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_log::record::Body;

    /// Events covering every optional part the in-place reader steps over.
    fn varied_events() -> Vec<Body> {
        use sensor_log::event::{Container, Event, FileAccess, Identity, Kind, Process};
        let full = Event {
            kind: Kind::Ptrace,
            time: "t".to_string(),
            ok: true,
            errno: Some(13),
            process: Some(Process {
                pid: 77,
                comm: "c".to_string(),
                exe: "/usr/bin/x".to_string(),
                cmdline: "x -y".to_string(),
                ancestors: vec!["bash".to_string(), "sshd".to_string()],
                ..Process::default()
            }),
            identity: Some(Identity {
                user: "alice".to_string(),
                unit: Some("u.service".to_string()),
                container: Some(Container {
                    id: "abc".to_string(),
                    runtime: "docker".to_string(),
                }),
                pod_uid: Some("pod".to_string()),
                human: true,
                human_reason: "r".to_string(),
                owner: Some("o".to_string()),
            }),
            file: Some(FileAccess {
                path: "/etc/shadow".to_string(),
                ..FileAccess::default()
            }),
            target: None,
            syscall: None,
            loss: None,
            detail: None,
        };
        let mut bare_identity = full.clone();
        bare_identity.errno = None;
        bare_identity.identity = Some(Identity {
            user: "svc".to_string(),
            ..Identity::default()
        });
        bare_identity.file = None;
        let mut no_process = full.clone();
        no_process.process = None;
        no_process.identity = None;
        vec![
            Body::Event(full),
            Body::Event(bare_identity),
            Body::Event(no_process),
            Body::Event(Event::loss("agent_queue", Default::default(), 1)),
            Body::Event(Event::watch_overflow("/d", "/d/*", 300, 256, 1)),
        ]
    }

    /// In both record versions: the reader stops at `file.path`, before `detail`.
    #[test]
    fn terms_in_place_equal_decoded() {
        use sensor_log::record::{Record, RecordHeader, FORMAT_VERSION, FORMAT_VERSION_1};
        let versions = [FORMAT_VERSION_1, FORMAT_VERSION];
        for (version, body) in versions
            .into_iter()
            .flat_map(|v| varied_events().into_iter().map(move |b| (v, b)))
            // Version 1 has no `detail`.
            .filter(|(v, b)| {
                *v == FORMAT_VERSION || !matches!(b, Body::Event(e) if e.detail.is_some())
            })
        {
            let record = Record {
                header: RecordHeader {
                    version,
                    host_id: [1; 16],
                    epoch: 1,
                    seq: 9,
                    wall_ns: 1,
                    mono_ns: 1,
                },
                body,
            };
            let bytes = record.encode().expect("encode");
            let mut decoded = [None; DIMS];
            each_term(&record.body, |dim, term| {
                decoded[dim as usize - 1] = Some((dim, term))
            });
            let (kind, in_place) = terms_in_place(&bytes).expect("an event reads in place");
            assert_eq!(kind, record.body.kind_name());
            assert_eq!(in_place, decoded, "{:?}", record.body);
        }
    }
}
