//! A remote verifier's side of the anchoring rule (docs/tpm.md, "The collector as remote
//! verifier"): the checks of `sensorctl verify --tpm` that need no live TPM, made batch by
//! batch, so a collector checks each quote as its batch arrives instead of replaying a whole
//! boot cycle. The state between batches (`Replay`) is small and serializable: the collector
//! keeps it in the host's checkpoint, and the replayed PCR of each batch beside the batch.

use sensor_log::anchor::{base_cycle, cycle_of, Cycle};
use sensor_log::record::{AnchorBase, Hash, TpmQuote};
use sensor_log::Anchor;
use serde::{Deserialize, Serialize};

use crate::{extend_pcr, quote_binding, verify_quote, AkPublic, Error, Quote, QuoteInfo, Result};

/// Batches of a cycle kept while its base is not known: the agent chains the base in the
/// same seal as the first header naming its cycle, so more than one is rare.
const UNBASED_BATCHES: usize = 64;

/// Checks a quote the agent chained into its log (`TpmEntry::Quote`) against the log: signed
/// by `ak`, bound to `digest` (the header digest of the batch it names) and quoting `pcr` (the
/// replay up to that batch). `sensorctl verify --tpm` and the collector both call this.
pub fn check_stored_quote(
    q: &TpmQuote,
    pcr_index: u32,
    ak: &AkPublic,
    digest: &Hash,
    pcr: &Hash,
) -> Result<QuoteInfo> {
    let signature = <[u8; 64]>::try_from(q.signature.as_slice()).map_err(|_| Error::Malformed {
        what: "stored quote signature",
        reason: format!("{} bytes, not 64", q.signature.len()),
    })?;
    let quote = Quote {
        attest: q.attest.clone(),
        signature,
        pcr_index,
        pcr_value: *pcr,
        ak_public: ak.clone(),
    };
    verify_quote(&quote, ak, &quote_binding(q.batch, digest, &[0; 32]), pcr)
}

/// A batch in the replay: its number, header digest and the PCR once it is extended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    pub number: u64,
    pub digest: Hash,
    pub pcr: Hash,
}

/// Where the replay of the current cycle starts: its first base.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    pub replay_from: u64,
    pub pcr_index: u32,
    pub pcr_value: Hash,
}

/// What a remote verifier holds about a host's anchoring between two batches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    /// The attestation key pinned: the first base's. Quotes must be signed by it and every
    /// later base must name it.
    pub ak_public: Option<Vec<u8>>,
    /// The newest TPM boot cycle a header or base named.
    pub cycle: Option<Cycle>,
    /// The cycle's first base, once seen.
    pub start: Option<Start>,
    /// The newest batch replayed in the cycle.
    pub last: Option<Point>,
    /// Batches of the cycle seen before its base.
    pub unbased: Vec<(u64, Hash)>,
}

impl Replay {
    /// Anchored: a base of the current cycle is held, so its quotes are checked.
    pub fn anchored(&self) -> bool {
        self.start.is_some()
    }

    /// A verified batch header, before its records. Returns the batch's point when it is
    /// replayed now (its PCR, to keep beside the batch for the quote that will name it).
    pub fn header(&mut self, number: u64, digest: &Hash, anchor: Option<&Anchor>) -> Option<Point> {
        let cycle = cycle_of(anchor?);
        if self.cycle != Some(cycle) {
            self.new_cycle(Some(cycle));
        }
        if self.start.is_none() {
            if self.unbased.len() >= UNBASED_BATCHES {
                self.unbased.remove(0);
            }
            self.unbased.push((number, *digest));
            return None;
        }
        Some(self.extend(number, digest))
    }

    /// A replay base (`tpm_anchored`, `tpm_resumed`). `earlier(below, from)` gives the newest
    /// point already stored with `from <= number < below`. `Ok(Some(fault))` when the base
    /// names another attestation key than the pinned one, or does not continue the replay.
    pub fn base<E>(
        &mut self,
        base: &AnchorBase,
        earlier: impl FnOnce(u64, u64) -> Result<Option<Point>, E>,
    ) -> Result<Option<String>, E> {
        let mut fault = None;
        match &self.ak_public {
            None => self.ak_public = Some(base.ak_public.clone()),
            Some(pinned) if *pinned != base.ak_public => {
                fault = Some(format!(
                    "the replay base for batch {} names attestation key {}, not the one pinned for this host",
                    base.replay_from,
                    base.ak_fingerprint()
                ));
            }
            Some(_) => {}
        }
        let cycle = base_cycle(base);
        if self.cycle != Some(cycle) {
            self.new_cycle(Some(cycle));
        }
        let Some(start) = self.start else {
            self.start = Some(Start {
                replay_from: base.replay_from,
                pcr_index: base.pcr_index,
                pcr_value: base.pcr_value,
            });
            for (number, digest) in std::mem::take(&mut self.unbased) {
                if number >= base.replay_from {
                    self.extend(number, &digest);
                }
            }
            return Ok(fault);
        };
        let before = match self.last.filter(|p| p.number < base.replay_from) {
            Some(p) => Some(p),
            None => earlier(base.replay_from, start.replay_from)?,
        };
        let expected = before.map_or(start.pcr_value, |p| p.pcr);
        if expected != base.pcr_value {
            fault.get_or_insert(format!(
                "the replay base for batch {} records a PCR value that the replay of this boot cycle's batches before it does not give (the TPM saw batches this collector does not hold)",
                base.replay_from
            ));
        }
        Ok(fault)
    }

    /// A quote chained in the log, checked against the pinned key and the replay of the
    /// batches up to the one it names (`earlier` as for `base`). `Ok(None)`: verified, or not
    /// checkable here (no base of its cycle held, or it names a batch before the cycle's base,
    /// as `AnchorTrail` ignores such quotes).
    pub fn quote<E>(
        &self,
        q: &TpmQuote,
        earlier: impl FnOnce(u64, u64) -> Result<Option<Point>, E>,
    ) -> Result<Option<String>, E> {
        let (Some(start), Some(ak)) = (self.start, &self.ak_public) else {
            return Ok(None);
        };
        if q.batch < start.replay_from {
            return Ok(None);
        }
        let point = match self.last {
            Some(p) if p.number <= q.batch => Some(p),
            _ => earlier(q.batch + 1, start.replay_from)?,
        };
        let Some(point) = point.filter(|p| p.number == q.batch) else {
            return Ok(Some(format!(
                "the quote of batch {} names a batch outside the anchored span this collector holds",
                q.batch
            )));
        };
        let ak = AkPublic {
            public_area: ak.clone(),
        };
        let fault = match check_stored_quote(q, start.pcr_index, &ak, &point.digest, &point.pcr) {
            Ok(_) => return Ok(None),
            Err(Error::NonceMismatch) => {
                "it was taken over a different header for that batch".to_string()
            }
            Err(Error::PcrMismatch) => format!(
                "its PCR differs from the replay of batches {}..={}",
                start.replay_from, q.batch
            ),
            Err(Error::SignerMismatch | Error::BadSignature) => {
                "it is not signed by the attestation key pinned for this host".to_string()
            }
            Err(e) => format!("it does not verify: {e}"),
        };
        Ok(Some(format!("the quote of batch {}: {fault}", q.batch)))
    }

    /// The log says it is not anchored from here on: nothing of the cycle is replayed until a
    /// base comes.
    pub fn unanchored(&mut self) {
        self.new_cycle(None);
    }

    fn new_cycle(&mut self, cycle: Option<Cycle>) {
        self.cycle = cycle;
        self.start = None;
        self.last = None;
        self.unbased.clear();
    }

    fn extend(&mut self, number: u64, digest: &Hash) -> Point {
        let from = match (self.last, self.start) {
            (Some(p), _) => p.pcr,
            (None, Some(s)) => s.pcr_value,
            (None, None) => [0; 32],
        };
        let point = Point {
            number,
            digest: *digest,
            pcr: extend_pcr(&from, digest),
        };
        self.last = Some(point);
        point
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchor() -> Anchor {
        Anchor {
            pcr_index: 13,
            nv_counter: 1,
            reset_count: 2,
            restart_count: 0,
        }
    }

    fn base(replay_from: u64, pcr_value: Hash, ak: u8) -> AnchorBase {
        AnchorBase {
            replay_from,
            pcr_index: 13,
            pcr_value,
            reset_count: 2,
            restart_count: 0,
            nv_counter: 1,
            nv_index: 0,
            ak_handle: 0,
            ak_public: vec![ak; 4],
        }
    }

    type Never = std::convert::Infallible;

    fn none(_: u64, _: u64) -> Result<Option<Point>, Never> {
        Ok(None)
    }

    /// The base comes in the records of the batch whose header first names its cycle: that
    /// batch is replayed from the base; a later base must continue the replay, and name the
    /// pinned key.
    #[test]
    fn replays_from_the_first_base_and_checks_later_ones() -> Result<(), Never> {
        let mut r = Replay::default();
        assert_eq!(r.header(1, &[1; 32], None), None);
        assert_eq!(r.header(2, &[2; 32], Some(&anchor())), None);
        assert_eq!(r.base(&base(2, [7; 32], 1), none)?, None);
        let p2 = extend_pcr(&[7; 32], &[2; 32]);
        assert_eq!(r.last.map(|p| p.pcr), Some(p2));
        let p3 = r.header(3, &[3; 32], Some(&anchor())).map(|p| p.pcr);
        assert_eq!(p3, Some(extend_pcr(&p2, &[3; 32])));
        assert_eq!(r.base(&base(4, p3.unwrap_or_default(), 1), none)?, None);
        let stored = Point {
            number: 2,
            digest: [2; 32],
            pcr: p2,
        };
        assert_eq!(
            r.base(&base(3, p2, 1), |_, _| Ok::<_, Never>(Some(stored)))?,
            None
        );
        assert!(r.base(&base(4, [9; 32], 1), none)?.is_some());
        let other = r.base(&base(4, p3.unwrap_or_default(), 2), none)?;
        assert!(other.is_some_and(|f| f.contains("not the one pinned")));
        Ok(())
    }
}
