//! The log's side of TPM anchoring (docs/tpm.md, "The anchoring rule"). In each TPM boot cycle
//! the agent extends into the anchor PCR, in batch order, exactly the batches whose header
//! names that cycle, from the PCR value recorded by the cycle's first replay base. So the
//! PCR a TPM shows must be the replay of a prefix of those batches (the log may be ahead,
//! never behind), and every later base of the cycle must record the replay of the batches
//! before it (`sensor_tpm::classify` checks both). This module collects, for the newest cycle
//! in a log, what those checks need:
//!
//! - `verify` feeds it every verified header and TPM entry (`TrailBuilder`), for
//!   `sensorctl verify --tpm` and a collector;
//! - the agent's store feeds it the newest cycle's headers and TPM entries without verifying
//!   signatures (`sensor_store::Store::newest_anchor_trail`), for the agent's check at start.

use crate::batch::Anchor;
use crate::record::{AnchorBase, Hash, TpmEntry, TpmQuote};

/// A TPM boot cycle, (reset count, restart count): within one, the anchor PCR only grows.
pub type Cycle = (u32, u32);

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
}

/// Builds an `AnchorTrail` from verified headers and records, in log order.
#[derive(Debug, Default)]
pub struct TrailBuilder {
    trail: AnchorTrail,
    /// The cycle of the newest anchored header or base.
    cycle: Option<Cycle>,
    /// Batches of `cycle` seen while its base is not known yet.
    unbased: Vec<(u64, Hash)>,
}

impl TrailBuilder {
    /// A verified batch header, before its records.
    pub fn header(&mut self, number: u64, digest: &Hash, anchor: Option<&Anchor>) {
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
    pub fn entry(&mut self, seq: u64, entry: &TpmEntry) {
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

    pub fn finish(self) -> AnchorTrail {
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
