//! Software replay of the anchor PCR and the classification of log state against TPM state.
//! Pure functions: `sensorctl verify --tpm` runs them without a TPM.

use sensor_log::anchor::{base_cycle, Cycle};
use sensor_log::AnchorTrail;
use sha2::{Digest, Sha256};

/// Domain tag of the quote binding (15 ASCII bytes, like the log's other tags).
pub const QUOTE_TAG: &[u8] = b"sensor-quote-v1";

/// One PCR extend in the SHA-256 bank: `SHA-256(pcr || digest)`.
pub fn extend_pcr(pcr: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(pcr);
    h.update(digest);
    h.finalize().into()
}

/// The PCR value after each of `digests` in turn, starting from `initial_pcr` (all zeros
/// after a TPM reset). Item `i` is the value once `digests[..=i]` have been extended.
pub fn replay<'a>(
    initial_pcr: [u8; 32],
    digests: impl IntoIterator<Item = &'a [u8; 32]> + 'a,
) -> impl Iterator<Item = [u8; 32]> + 'a {
    digests.into_iter().scan(initial_pcr, |pcr, d| {
        *pcr = extend_pcr(pcr, d);
        Some(*pcr)
    })
}

/// How many leading `digests` produce `pcr` (0 when `pcr` is still the initial value), or
/// `None` when no prefix does. The log may be ahead of the TPM's last quote, never behind,
/// so any prefix is acceptable (as in Keylime's replay).
pub fn matching_prefix(
    initial_pcr: [u8; 32],
    digests: &[[u8; 32]],
    pcr: &[u8; 32],
) -> Option<usize> {
    if &initial_pcr == pcr {
        return Some(0);
    }
    replay(initial_pcr, digests)
        .position(|v| &v == pcr)
        .map(|i| i + 1)
}

/// Qualifying data for the agent's own periodic quotes: it binds the quote to the newest
/// batch on disk, so a verifier can tell a cut-off tail (the quote names a batch the log no
/// longer has) from a forged history. Layout: batch number (8 bytes big-endian, readable
/// without the log) followed by 24 bytes of `SHA-256("sensor-quote-v1" || number_be ||
/// batch digest || nonce)`. `nonce` is a verifier's challenge, or zeros for self-quotes.
pub fn quote_binding(batch_number: u64, batch_digest: &[u8; 32], nonce: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(QUOTE_TAG);
    h.update(batch_number.to_be_bytes());
    h.update(batch_digest);
    h.update(nonce);
    let tail: [u8; 32] = h.finalize().into();
    let mut out = [0; 32];
    out[..8].copy_from_slice(&batch_number.to_be_bytes());
    out[8..].copy_from_slice(&tail[..24]);
    out
}

/// The batch number a `quote_binding` claims (its first 8 bytes).
pub fn bound_batch_number(qualifying_data: &[u8; 32]) -> u64 {
    let mut n = [0; 8];
    n.copy_from_slice(&qualifying_data[..8]);
    u64::from_be_bytes(n)
}

/// The counter part of `classify`. The agent records a counter value in the headers before
/// it advances the TPM's counter to it (docs/tpm.md, "NV counter"), so the TPM is at the
/// newest header's value, or one below it when the agent died between the two. `None` when
/// it is; else the alarm. The agent runs it at start too.
pub fn counter_outcome(tpm: u64, log: u64) -> Option<Outcome> {
    if tpm > log {
        return Some(Outcome::RolledBack { tpm, log });
    }
    (tpm + 1 < log).then(|| {
        Outcome::TpmStateMismatch(format!(
            "the log records NV counter {log}, the TPM is only at {tpm}"
        ))
    })
}

/// A replay base as `classify` needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaseMark {
    /// The seq of the base's record, to name it.
    pub seq: u64,
    /// The first batch extended from `pcr_value`.
    pub replay_from: u64,
    pub pcr_value: [u8; 32],
}

/// What the log says about its anchoring, for the newest TPM boot cycle it names
/// (`sensor_log::AnchorTrail`).
#[derive(Clone, Debug)]
pub struct LogAnchorState<'a> {
    /// The cycle's replay bases, oldest first; replay starts at the first. Not empty.
    pub bases: Vec<BaseMark>,
    /// (number, header digest) of the cycle's batches from the first base on, oldest first.
    pub anchored: &'a [(u64, [u8; 32])],
    /// `anchor.nv_counter` of the newest anchored batch.
    pub newest_nv_counter: Option<u64>,
    /// The cycle: TPM reset and restart counts.
    pub reset_count: u32,
    pub restart_count: u32,
}

impl<'a> LogAnchorState<'a> {
    /// The log's side of `classify` for TPM boot cycle `cycle`, from the trail a verifier's
    /// walk or the agent's store read: the cycle's bases, the batches anchored from the
    /// first, and the newest anchored batch's counter.
    pub fn of_trail(trail: &'a AnchorTrail, cycle: Cycle) -> LogAnchorState<'a> {
        LogAnchorState {
            bases: trail
                .bases
                .iter()
                .filter(|(_, b)| base_cycle(b) == cycle)
                .map(|(seq, b)| BaseMark {
                    seq: *seq,
                    replay_from: b.replay_from,
                    pcr_value: b.pcr_value,
                })
                .collect(),
            anchored: &trail.anchored,
            newest_nv_counter: trail.last_anchor.map(|(_, a)| a.nv_counter),
            reset_count: cycle.0,
            restart_count: cycle.1,
        }
    }

    /// The PCR value a quote covers, from its `pcr_digest` (`SHA-256` of the value):
    /// `read`, the value read beside the quote, when it is that value; else the replay of
    /// the cycle's batches up to the one whose digest it is, since the agent may extend
    /// between a verifier's quote and its read; else `read`, which then is no replay of
    /// the log either (the quoted value was not, and extends never lead back to it).
    pub fn quoted_pcr(&self, pcr_digest: &[u8], read: [u8; 32]) -> [u8; 32] {
        let is_quoted = |v: &[u8; 32]| Sha256::digest(v).as_slice() == pcr_digest;
        if is_quoted(&read) {
            return read;
        }
        let Some(first) = self.bases.first() else {
            return read;
        };
        let digests = self.anchored.iter().map(|(_, d)| d);
        std::iter::once(first.pcr_value)
            .chain(replay(first.pcr_value, digests))
            .find(is_quoted)
            .unwrap_or(read)
    }

    fn digests_before(&self, batch: u64) -> impl Iterator<Item = &[u8; 32]> + '_ {
        self.anchored
            .iter()
            .take_while(move |(n, _)| *n < batch)
            .map(|(_, d)| d)
    }
}

/// What the TPM says, from a quote that `verify_quote` accepted and a counter read.
#[derive(Clone, Copy, Debug)]
pub struct TpmState {
    /// The PCR value the verified quote covers.
    pub pcr_value: [u8; 32],
    /// The newest batch a quote stored in the log vouches for (already checked against the
    /// log); `None` without one.
    pub covers_batch: Option<u64>,
    pub nv_counter: Option<u64>,
    pub reset_count: u32,
    pub restart_count: u32,
}

/// The verdict of comparing log and TPM. Everything but `Consistent` is an alarm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A prefix of the cycle's batches reproduces the PCR; `unanchored` batches are newer
    /// than the TPM state (the log may be ahead of the PCR, never behind).
    Consistent { anchored: usize, unanchored: usize },
    /// The TPM has seen batches that the log does not hold: the PCR is no replay of a prefix
    /// of the log's batches (`at_base`: a later replay base records such a PCR value, i.e.
    /// when the agent started or resumed, the log had already lost them). A cut tail and a
    /// restored older copy look the same here.
    TailTruncated {
        log_last: Option<u64>,
        at_base: Option<BaseMark>,
        covered: Option<u64>,
    },
    /// The TPM counter is ahead of the newest batch's recorded value: the disk holds an older
    /// copy of the log (or its tail was cut).
    RolledBack { tpm: u64, log: u64 },
    /// The TPM was reset (rebooted) since the log's newest boot cycle, yet the log shows no
    /// newer cycle.
    RebootHidden {
        log_reset_count: u32,
        tpm_reset_count: u32,
    },
    /// TPM and log cannot both be right: counters went backwards (another TPM, or the TPM
    /// was cleared), or the log claims a counter value the TPM never reached.
    TpmStateMismatch(String),
}

impl Outcome {
    /// The reason's name, as `sensorctl verify --tpm` and the agent's alarm record print it.
    pub fn reason(&self) -> &'static str {
        match self {
            Outcome::Consistent { .. } => "consistent",
            Outcome::TailTruncated { .. } => "tail truncated",
            Outcome::RolledBack { .. } => "rolled back to an older copy",
            Outcome::RebootHidden { .. } => "reboot hidden",
            Outcome::TpmStateMismatch(_) => "TPM state mismatch",
        }
    }

    /// The evidence behind the verdict, in words.
    pub fn detail(&self) -> String {
        match self {
            Outcome::Consistent {
                anchored,
                unanchored,
            } => format!("{anchored} batches replay to the PCR, {unanchored} newer ones not yet extended"),
            Outcome::TailTruncated {
                at_base: Some(base),
                ..
            } => format!(
                "the replay base recorded at seq {} (for batch {}) holds a PCR value that no prefix of the log's batches before it gives: the TPM had seen batches the log no longer holds (a cut tail or a restored older copy)",
                base.seq, base.replay_from
            ),
            Outcome::TailTruncated {
                log_last, covered, ..
            } => format!(
                "no prefix of the log's batches of this TPM boot cycle replays to the PCR: the TPM has seen batches after the log's end{} (a cut tail or a restored older copy){}",
                log_last.map_or(String::new(), |l| format!(" (batch {l})")),
                covered.map_or(String::new(), |c| format!("; a stored quote vouches for the log up to batch {c}"))
            ),
            Outcome::RolledBack { tpm, log } => format!(
                "TPM counter {tpm}, the newest anchored batch records {log}: the TPM counted advances the log does not hold (a restored older copy or a cut tail)"
            ),
            Outcome::RebootHidden {
                log_reset_count,
                tpm_reset_count,
            } => format!(
                "TPM reset count {tpm_reset_count}, the log's newest anchor records {log_reset_count} and no newer boot cycle"
            ),
            Outcome::TpmStateMismatch(d) => d.clone(),
        }
    }
}

/// Classifies log state against TPM state. Order matters: a hidden reboot or a foreign TPM
/// makes the PCR comparison meaningless, so those are decided first; then every later base
/// of the cycle against the replay before it, and the live PCR against a prefix of the
/// replay, which name the first batch the log lacks; then the counter, which also sees a log
/// cut back before the cycle began.
pub fn classify(log: &LogAnchorState<'_>, tpm: &TpmState) -> Outcome {
    if tpm.reset_count < log.reset_count {
        return Outcome::TpmStateMismatch(format!(
            "TPM reset count {} is below the {} the log recorded",
            tpm.reset_count, log.reset_count
        ));
    }
    if tpm.reset_count > log.reset_count {
        return Outcome::RebootHidden {
            log_reset_count: log.reset_count,
            tpm_reset_count: tpm.reset_count,
        };
    }
    if tpm.restart_count < log.restart_count {
        return Outcome::TpmStateMismatch(format!(
            "TPM restart count {} is below the {} the log recorded",
            tpm.restart_count, log.restart_count
        ));
    }
    let Some((first, later)) = log.bases.split_first() else {
        return Outcome::TpmStateMismatch(
            "the log names no replay base for this TPM boot cycle".into(),
        );
    };
    let n = log.anchored.len();
    let log_last = log.anchored.last().map(|(number, _)| *number);
    for base in later {
        let replayed = log
            .digests_before(base.replay_from)
            .fold(first.pcr_value, |pcr, d| extend_pcr(&pcr, d));
        if replayed != base.pcr_value {
            return Outcome::TailTruncated {
                log_last,
                at_base: Some(*base),
                covered: None,
            };
        }
    }
    let digests: Vec<[u8; 32]> = log.anchored.iter().map(|(_, d)| *d).collect();
    let Some(anchored) = matching_prefix(first.pcr_value, &digests, &tpm.pcr_value) else {
        return Outcome::TailTruncated {
            log_last,
            at_base: None,
            covered: tpm.covers_batch,
        };
    };
    if let (Some(t), Some(l)) = (tpm.nv_counter, log.newest_nv_counter) {
        if let Some(alarm) = counter_outcome(t, l) {
            return alarm;
        }
    }
    Outcome::Consistent {
        anchored,
        unanchored: n - anchored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests(n: u8) -> Vec<[u8; 32]> {
        (1..=n).map(|i| [i; 32]).collect()
    }

    fn pcr_after(d: &[[u8; 32]], k: usize) -> [u8; 32] {
        replay([0; 32], &d[..k]).last().unwrap_or([0; 32])
    }

    fn numbered(d: &[[u8; 32]]) -> Vec<(u64, [u8; 32])> {
        d.iter().zip(10..).map(|(d, n)| (n, *d)).collect()
    }

    const FIRST: [BaseMark; 1] = [BaseMark {
        seq: 1,
        replay_from: 10,
        pcr_value: [0; 32],
    }];

    fn state<'a>(anchored: &'a [(u64, [u8; 32])], bases: &'a [BaseMark]) -> LogAnchorState<'a> {
        LogAnchorState {
            bases: bases.to_vec(),
            anchored,
            newest_nv_counter: Some(5),
            reset_count: 3,
            restart_count: 0,
        }
    }

    fn tpm(pcr: [u8; 32]) -> TpmState {
        TpmState {
            pcr_value: pcr,
            covers_batch: None,
            nv_counter: Some(5),
            reset_count: 3,
            restart_count: 0,
        }
    }

    #[test]
    fn replay_matches_manual_extends() {
        let d = digests(3);
        let mut pcr = [0; 32];
        let values: Vec<_> = replay([0; 32], &d).collect();
        for (i, x) in d.iter().enumerate() {
            pcr = extend_pcr(&pcr, x);
            assert_eq!(values[i], pcr);
        }
        assert_eq!(matching_prefix([0; 32], &d, &values[1]), Some(2));
        assert_eq!(matching_prefix([0; 32], &d, &[0; 32]), Some(0));
        assert_eq!(matching_prefix([0; 32], &d, &[9; 32]), None);
    }

    #[test]
    fn the_quoted_pcr_is_found_by_its_digest() {
        let d = digests(4);
        let all = numbered(&d);
        let log = state(&all, &FIRST);
        let sha = |v: &[u8; 32]| Sha256::digest(v).to_vec();
        let after = |k| pcr_after(&d, k);
        // Read beside the quote with nothing in between: the read value.
        assert_eq!(log.quoted_pcr(&sha(&after(2)), after(2)), after(2));
        // The agent extended batches 3 and 4 between quote and read: the replay of 2.
        assert_eq!(log.quoted_pcr(&sha(&after(2)), after(4)), after(2));
        // Quoted before any batch of the cycle was extended: the base's value.
        assert_eq!(log.quoted_pcr(&sha(&[0; 32]), after(1)), [0; 32]);
        // A value off the log's chain is no replay: the read value stands, and is none.
        assert_eq!(log.quoted_pcr(&sha(&[9; 32]), after(3)), after(3));
        assert_eq!(log.quoted_pcr(&[0; 32], after(3)), after(3));
        // No base for the cycle: nothing to replay.
        assert_eq!(
            state(&all, &[]).quoted_pcr(&sha(&after(1)), after(3)),
            after(3)
        );
    }

    #[test]
    fn binding_round_trips_the_number() {
        let q = quote_binding(77, &[1; 32], &[0; 32]);
        assert_eq!(bound_batch_number(&q), 77);
        assert_ne!(q, quote_binding(77, &[2; 32], &[0; 32]));
    }

    #[test]
    fn outcomes() {
        let d = digests(5);
        let all = numbered(&d);
        let log = state(&all, &FIRST);
        assert_eq!(
            classify(&log, &tpm(pcr_after(&d, 3))),
            Outcome::Consistent {
                anchored: 3,
                unanchored: 2
            }
        );
        // The TPM saw 5 batches, the log kept 3.
        let cut = state(&all[..3], &FIRST);
        assert!(matches!(
            classify(&cut, &tpm(pcr_after(&d, 5))),
            Outcome::TailTruncated {
                log_last: Some(12),
                at_base: None,
                ..
            }
        ));
        let mut forged = all.clone();
        forged[1].1 = [0xee; 32];
        assert!(matches!(
            classify(&state(&forged, &FIRST), &tpm(pcr_after(&d, 4))),
            Outcome::TailTruncated { .. }
        ));
        // Counter: the log's value, or one below (the agent died between recording and
        // advancing); anything else is an alarm.
        let mut t = tpm(pcr_after(&d, 5));
        t.nv_counter = Some(4);
        assert!(matches!(classify(&log, &t), Outcome::Consistent { .. }));
        t.nv_counter = Some(6);
        assert_eq!(classify(&log, &t), Outcome::RolledBack { tpm: 6, log: 5 });
        t.nv_counter = Some(3);
        assert!(matches!(classify(&log, &t), Outcome::TpmStateMismatch(_)));
        let mut t = tpm([0; 32]);
        t.reset_count = 4;
        assert!(matches!(classify(&log, &t), Outcome::RebootHidden { .. }));
        t.reset_count = 2;
        assert!(matches!(classify(&log, &t), Outcome::TpmStateMismatch(_)));
    }

    /// A later base of the cycle must record the replay of the batches before it: one that
    /// records more (the TPM saw batches since cut away) is truncation, found without the TPM's
    /// live value even agreeing.
    #[test]
    fn later_bases_must_continue_the_replay() {
        let d = digests(5);
        let all = numbered(&d);
        let good = [
            FIRST[0],
            BaseMark {
                seq: 40,
                replay_from: 13,
                pcr_value: pcr_after(&d, 3),
            },
        ];
        assert!(matches!(
            classify(&state(&all, &good), &tpm(pcr_after(&d, 5))),
            Outcome::Consistent { anchored: 5, .. }
        ));
        // Batches 12 and 13 were cut and the log re-extended from a base read afterwards: the
        // base's value includes extends the log no longer has.
        let mut spliced = all[..2].to_vec();
        spliced.extend_from_slice(&all[3..]);
        let mut later = good[1];
        later.pcr_value = pcr_after(&d, 3);
        let bases = [FIRST[0], later];
        let outcome = classify(&state(&spliced, &bases), &tpm([9; 32]));
        assert_eq!(
            outcome,
            Outcome::TailTruncated {
                log_last: Some(14),
                at_base: Some(later),
                covered: None
            }
        );
        assert!(outcome.detail().contains("seq 40"), "{}", outcome.detail());
    }
}
