//! The log's side of TPM anchoring (docs/tpm.md, "The anchoring rule"). In each TPM boot cycle
//! the agent extends into the anchor PCR, in batch order, exactly the batches whose header
//! names that cycle, from the PCR value recorded by the cycle's first replay base. So the
//! PCR a TPM shows must be the replay of a prefix of those batches (the log may be ahead,
//! never behind), and every later base of the cycle must record the replay of the batches
//! before it (`sensor_tpm::classify` checks both). This module collects, for the newest cycle
//! in a log, what those checks need:
//!
//! - `verify` feeds it every verified header and TPM entry (`TrailBuilder`), for
//!   `sensorctl verify --tpm`;
//! - `AnchorTrail::read_newest` reads it from the store without verifying signatures, for the
//!   agent's check at start (a full verification would cost minutes on a large log): the
//!   whole newest cycle, every epoch of the current boot.

use crate::batch::{self, Anchor, BatchHeader};
use crate::error::Result;
use crate::record::{self, AnchorBase, Body, Hash, Record, TpmEntry, TpmQuote};
use crate::store::{to_i64, to_u64, Store};

/// A TPM boot cycle, (reset count, restart count): within one, the anchor PCR only grows.
pub type Cycle = (u32, u32);

/// Body tag of `Body::Tpm` (declaration order of `Body`, docs/log-format.md).
const BODY_TAG_TPM: u32 = 4;

/// Batches of a cycle kept while its base is not known: the base is chained in the same seal
/// as the first header that names its cycle, so only a pruned base leaves more than a few.
const UNBASED_BATCHES: usize = 4096;

pub fn cycle_of(anchor: &Anchor) -> Cycle {
    (anchor.reset_count, anchor.restart_count)
}

pub fn base_cycle(base: &AnchorBase) -> Cycle {
    (base.reset_count, base.restart_count)
}

/// What the log says about its anchoring, for the newest TPM boot cycle it names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnchorTrail {
    /// The replay bases of the newest cycle, with their seq, oldest first: the first is where
    /// replay starts.
    pub bases: Vec<(u64, AnchorBase)>,
    /// (number, header digest) of the batches naming that cycle from the first base's
    /// `replay_from` on, oldest first: what the agent extended, or will, in that order.
    pub anchored: Vec<(u64, Hash)>,
    /// The newest quote of a batch at or after the first base's `replay_from`.
    pub quote: Option<TpmQuote>,
    /// The newest batch that has an anchor: its number and anchor.
    pub last_anchor: Option<(u64, Anchor)>,
    /// The newest batch number.
    pub last_batch: u64,
    /// The newest `Unanchored` reason, when no base follows it.
    pub unanchored: Option<String>,
    /// The newest alarm the agent recorded: (seq, reason, detail).
    pub alarm: Option<(u64, String, String)>,
    /// The attestation key of the oldest retained base: the log pins it, every later base
    /// must name the same key.
    pub ak_public: Option<Vec<u8>>,
    /// The first base that names another attestation key: its seq.
    pub ak_changed: Option<u64>,
}

impl AnchorTrail {
    /// Where replay starts: the first base of the newest cycle.
    pub fn base(&self) -> Option<&AnchorBase> {
        self.bases.first().map(|(_, b)| b)
    }

    /// The newest cycle's trail from the store, for the agent's start check: the newest
    /// anchored header names the cycle, the headers are read back to the first that names it,
    /// then forwards from there with the cycle's TPM entries. Headers are decoded and hashed,
    /// nothing is verified (`verify` does that), and only records whose kind column names a
    /// TPM entry are decoded: an edited kind column can hide a base, which only makes the
    /// check stricter (replay from an earlier base, or none). Cost: one pass over the
    /// cycle's headers and one over its records' kind column; 40 bytes per batch of the
    /// cycle in memory.
    pub fn read_newest(store: &Store) -> Result<AnchorTrail> {
        let Some(first) = newest_cycle_start(store)? else {
            return Ok(AnchorTrail {
                last_batch: store.last_batch()?.map_or(0, |b| b.number),
                ..AnchorTrail::default()
            });
        };
        let mut builder = TrailBuilder::default();
        let mut batches = store
            .conn
            .prepare("SELECT number, header FROM batches WHERE number >= ?1 ORDER BY number")?;
        let mut records = store.conn.prepare(
            "SELECT seq, bytes FROM records WHERE seq >= ?1
             AND kind IN ('tpm_anchored', 'tpm_resumed', 'tpm_quote', 'tpm_alarm')
             ORDER BY seq",
        )?;
        let mut batch_rows = batches.query([to_i64(first.0)?])?;
        let mut record_rows = records.query([to_i64(first.1)?])?;
        let mut entry = next_entry(&mut record_rows)?;
        while let Some(r) = batch_rows.next()? {
            let bytes: Vec<u8> = r.get(1)?;
            let header = BatchHeader::decode(&bytes)?;
            builder.header(
                header.number,
                &batch::digest(&bytes),
                header.anchor.as_ref(),
            );
            let end = header.first_seq.saturating_add(header.count);
            while let Some((seq, e)) = entry.take() {
                if seq >= end {
                    entry = Some((seq, e));
                    break;
                }
                builder.entry(seq, &e);
                entry = next_entry(&mut record_rows)?;
            }
        }
        Ok(builder.finish())
    }
}

/// The first batch (number, first seq) of the newest TPM boot cycle a header names, read
/// backwards from the newest batch; `None` when no header has an anchor.
fn newest_cycle_start(store: &Store) -> Result<Option<(u64, u64)>> {
    let mut stmt = store
        .conn
        .prepare("SELECT header FROM batches ORDER BY number DESC")?;
    let mut rows = stmt.query([])?;
    let mut cycle = None;
    let mut first = None;
    while let Some(r) = rows.next()? {
        let header = BatchHeader::decode(&r.get::<_, Vec<u8>>(0)?)?;
        match (header.anchor.as_ref().map(cycle_of), cycle) {
            (Some(c), None) => cycle = Some(c),
            (Some(c), Some(newest)) if c != newest => break,
            _ => {}
        }
        if header.anchor.is_some() {
            first = Some((header.number, header.first_seq));
        }
    }
    Ok(first)
}

/// The next TPM entry among `rows` (seq, bytes), skipping rows that do not decode as one.
fn next_entry(rows: &mut rusqlite::Rows<'_>) -> Result<Option<(u64, TpmEntry)>> {
    while let Some(r) = rows.next()? {
        let seq = to_u64(r.get(0)?, "seq")?;
        let bytes = r.get_ref(1)?.as_blob().unwrap_or_default();
        if !matches!(record::peek(bytes), Ok((_, BODY_TAG_TPM))) {
            continue;
        }
        if let Ok(Record {
            body: Body::Tpm(entry),
            ..
        }) = Record::decode(bytes)
        {
            return Ok(Some((seq, entry)));
        }
    }
    Ok(None)
}

/// Builds an `AnchorTrail` from verified headers and records, in log order.
#[derive(Default)]
pub(crate) struct TrailBuilder {
    trail: AnchorTrail,
    /// The cycle of the newest anchored header or base.
    cycle: Option<Cycle>,
    /// Batches of `cycle` seen while its base is not known yet.
    unbased: Vec<(u64, Hash)>,
}

impl TrailBuilder {
    /// A verified batch header, before its records.
    pub(crate) fn header(&mut self, number: u64, digest: &Hash, anchor: Option<&Anchor>) {
        self.trail.last_batch = number;
        let Some(anchor) = anchor else {
            return;
        };
        self.trail.last_anchor = Some((number, *anchor));
        let cycle = cycle_of(anchor);
        if self.cycle != Some(cycle) {
            self.new_cycle(cycle);
        }
        if !self.trail.bases.is_empty() {
            self.trail.anchored.push((number, *digest));
        } else {
            if self.unbased.len() >= UNBASED_BATCHES {
                self.unbased.remove(0);
            }
            self.unbased.push((number, *digest));
        }
    }

    /// A verified TPM entry at `seq`.
    pub(crate) fn entry(&mut self, seq: u64, entry: &TpmEntry) {
        match entry {
            TpmEntry::Anchored(base) | TpmEntry::Resumed { base, .. } => self.base(seq, base),
            TpmEntry::Quote(q) => {
                if self.trail.base().is_some_and(|b| q.batch >= b.replay_from) {
                    self.trail.quote = Some(q.clone());
                }
            }
            TpmEntry::Unanchored { reason } => self.trail.unanchored = Some(reason.clone()),
            TpmEntry::Alarm { reason, detail } => {
                self.trail.alarm = Some((seq, reason.clone(), detail.clone()));
            }
            TpmEntry::Failing { .. } => {}
        }
    }

    pub(crate) fn finish(self) -> AnchorTrail {
        self.trail
    }

    /// A newer TPM boot cycle: the PCR of the older one is gone, nothing of it is replayed.
    fn new_cycle(&mut self, cycle: Cycle) {
        self.cycle = Some(cycle);
        self.trail.bases.clear();
        self.trail.anchored.clear();
        self.trail.quote = None;
        self.unbased.clear();
    }

    fn base(&mut self, seq: u64, base: &AnchorBase) {
        match &self.trail.ak_public {
            None => self.trail.ak_public = Some(base.ak_public.clone()),
            Some(pinned) if *pinned != base.ak_public => {
                self.trail.ak_changed.get_or_insert(seq);
            }
            Some(_) => {}
        }
        self.trail.unanchored = None;
        let cycle = base_cycle(base);
        if self.cycle != Some(cycle) {
            self.new_cycle(cycle);
        }
        if self.trail.bases.is_empty() {
            self.trail.anchored = std::mem::take(&mut self.unbased);
            self.trail.anchored.retain(|(n, _)| *n >= base.replay_from);
        }
        self.trail.bases.push((seq, base.clone()));
    }
}
