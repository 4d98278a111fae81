//! Software replay of the anchor PCR and the classification of log state against TPM state.
//! Pure functions: `sensorctl verify --tpm` runs them without a TPM.

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
    digests: &'a [[u8; 32]],
) -> impl Iterator<Item = [u8; 32]> + 'a {
    digests.iter().scan(initial_pcr, |pcr, d| {
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

/// Largest forward jump of an orderly (hybrid) NV counter across an unorderly TPM restart: the
/// TPM writes it to NV every `MAX_ORDERLY_COUNT` (255 in the reference implementation)
/// increments and adds that much after losing the RAM copy.
pub const ORDERLY_JUMP: u64 = 256;

/// How far the TPM counter may legitimately be ahead of the newest batch's `nv_counter`:
/// nothing after a clean stop (the stop's advance is recorded in the last batch), one advance
/// otherwise (an `nv_interval` advance, or a start's, not yet sealed into a batch when the
/// agent died), plus `ORDERLY_JUMP` when an orderly counter has been through a TPM reset or
/// restart since (it may have jumped).
pub fn allowed_counter_lead(clean_stop: bool, tpm_restarted: bool, orderly: bool) -> u64 {
    let schedule = if clean_stop { 0 } else { 1 };
    schedule
        + if tpm_restarted && orderly {
            ORDERLY_JUMP
        } else {
            0
        }
}

/// The counter part of `classify`: `None` when the TPM counter is at or within `allowed_lead`
/// above the log's; else the alarm. The agent runs it alone at start, before a new epoch.
pub fn counter_outcome(tpm: u64, log: u64, allowed_lead: u64) -> Option<Outcome> {
    if tpm < log {
        return Some(Outcome::TpmStateMismatch(format!(
            "log records NV counter {log}, the TPM is only at {tpm}"
        )));
    }
    (tpm - log > allowed_lead).then_some(Outcome::RolledBack {
        tpm,
        log,
        allowed_lead,
    })
}

/// What the log says about its anchoring, for the current TPM boot cycle.
#[derive(Clone, Debug)]
pub struct LogAnchorState<'a> {
    /// PCR value before the first batch anchored in this TPM boot cycle (zeros after reset).
    pub initial_pcr: [u8; 32],
    /// Digests of the batches extended into the PCR in this boot cycle, oldest first.
    pub digests: &'a [[u8; 32]],
    /// Batch number of `digests[0]` (or of the next batch when `digests` is empty).
    pub first_number: u64,
    /// `anchor.nv_counter` of the newest batch, if it has an anchor.
    pub newest_nv_counter: Option<u64>,
    /// TPM reset count the log recorded at the start of its newest boot epoch.
    pub reset_count: Option<u32>,
    /// TPM restart count the log recorded with it.
    pub restart_count: Option<u32>,
}

/// What the TPM says, from a quote that `verify_quote` accepted and a counter read.
#[derive(Clone, Copy, Debug)]
pub struct TpmState {
    /// The PCR value the verified quote covers.
    pub pcr_value: [u8; 32],
    /// The batch number the quote vouches for, when its qualifying data is a
    /// `quote_binding` (`bound_batch_number`); `None` for a bare verifier nonce.
    pub covers_batch: Option<u64>,
    pub nv_counter: Option<u64>,
    pub reset_count: u32,
    pub restart_count: u32,
}

/// The verdict of comparing log and TPM. Everything but `Consistent` is an alarm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A prefix of the log's digests reproduces the PCR; `unanchored` batches are newer than
    /// the TPM state (the log may be ahead of the last quote, never behind).
    Consistent { anchored: usize, unanchored: usize },
    /// The quote covers batch `covered`, but the log ends at `log_last`.
    TailTruncated { covered: u64, log_last: Option<u64> },
    /// The TPM counter is ahead of the newest batch's recorded value by more than the
    /// schedule allows: the disk holds an older copy of the log.
    RolledBack {
        tpm: u64,
        log: u64,
        allowed_lead: u64,
    },
    /// No prefix of the log's digests reproduces the PCR: some anchored header was replaced.
    ForgedHeader,
    /// The TPM was reset (rebooted) since the log's newest boot epoch started, yet the log
    /// shows no newer boot epoch.
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
            Outcome::ForgedHeader => "forged header",
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
            Outcome::TailTruncated { covered, log_last } => format!(
                "the TPM has seen batch {covered}, the log ends at {}",
                log_last.map_or("no batch".into(), |l| format!("batch {l}"))
            ),
            Outcome::RolledBack {
                tpm,
                log,
                allowed_lead,
            } => format!(
                "TPM counter {tpm}, newest batch records {log} (at most {allowed_lead} behind is allowed)"
            ),
            Outcome::ForgedHeader => {
                "no prefix of the log's batch digests reproduces the PCR".into()
            }
            Outcome::RebootHidden {
                log_reset_count,
                tpm_reset_count,
            } => format!(
                "TPM reset count {tpm_reset_count}, the log's newest anchor records {log_reset_count} and no newer epoch"
            ),
            Outcome::TpmStateMismatch(d) => d.clone(),
        }
    }
}

/// Classifies log state against TPM state. Order matters: a hidden reboot or a foreign TPM
/// makes the PCR comparison meaningless, so those are decided first; then the counter
/// (rollback across restarts); then the PCR (truncation or forgery within the boot).
///
/// `allowed_lead` is how far the TPM counter may legitimately be ahead of the newest
/// batch's recorded value: the agent's advances since that batch was sealed (1 per
/// `nv_interval`, plus 1 at a clean stop) — the caller derives it from the schedule.
pub fn classify(log: &LogAnchorState<'_>, tpm: &TpmState, allowed_lead: u64) -> Outcome {
    if let Some(log_reset) = log.reset_count {
        if tpm.reset_count < log_reset {
            return Outcome::TpmStateMismatch(format!(
                "TPM reset count {} is below the {} the log recorded",
                tpm.reset_count, log_reset
            ));
        }
        if tpm.reset_count > log_reset {
            return Outcome::RebootHidden {
                log_reset_count: log_reset,
                tpm_reset_count: tpm.reset_count,
            };
        }
        if let Some(log_restart) = log.restart_count {
            if tpm.restart_count < log_restart {
                return Outcome::TpmStateMismatch(format!(
                    "TPM restart count {} is below the {} the log recorded",
                    tpm.restart_count, log_restart
                ));
            }
        }
    }
    if let (Some(t), Some(l)) = (tpm.nv_counter, log.newest_nv_counter) {
        if let Some(alarm) = counter_outcome(t, l, allowed_lead) {
            return alarm;
        }
    }
    let n = log.digests.len();
    let log_last = (n > 0).then(|| log.first_number + n as u64 - 1);
    match matching_prefix(log.initial_pcr, log.digests, &tpm.pcr_value) {
        Some(anchored) => Outcome::Consistent {
            anchored,
            unanchored: n - anchored,
        },
        None => match tpm.covers_batch {
            Some(covered) if log_last.is_none_or(|last| covered > last) => {
                Outcome::TailTruncated { covered, log_last }
            }
            _ => Outcome::ForgedHeader,
        },
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

    fn state(d: &[[u8; 32]]) -> LogAnchorState<'_> {
        LogAnchorState {
            initial_pcr: [0; 32],
            digests: d,
            first_number: 10,
            newest_nv_counter: Some(5),
            reset_count: Some(3),
            restart_count: Some(0),
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
    fn binding_round_trips_the_number() {
        let q = quote_binding(77, &[1; 32], &[0; 32]);
        assert_eq!(bound_batch_number(&q), 77);
        assert_ne!(q, quote_binding(77, &[2; 32], &[0; 32]));
    }

    #[test]
    fn outcomes() {
        let d = digests(5);
        let log = state(&d);
        assert_eq!(
            classify(&log, &tpm(pcr_after(&d, 3)), 2),
            Outcome::Consistent {
                anchored: 3,
                unanchored: 2
            }
        );
        // The TPM saw 5 batches, the log kept 3.
        let cut = state(&d[..3]);
        let mut t = tpm(pcr_after(&d, 5));
        t.covers_batch = Some(14);
        assert_eq!(
            classify(&cut, &t, 2),
            Outcome::TailTruncated {
                covered: 14,
                log_last: Some(12)
            }
        );
        t.covers_batch = None;
        assert_eq!(classify(&cut, &t, 2), Outcome::ForgedHeader);
        let mut forged = d.clone();
        forged[1] = [0xee; 32];
        let mut t = tpm(pcr_after(&d, 4));
        t.covers_batch = Some(13);
        assert_eq!(classify(&state(&forged), &t, 2), Outcome::ForgedHeader);
        let mut t = tpm(pcr_after(&d, 5));
        t.nv_counter = Some(9);
        assert!(matches!(
            classify(&log, &t, 2),
            Outcome::RolledBack { tpm: 9, log: 5, .. }
        ));
        t.nv_counter = Some(4);
        assert!(matches!(
            classify(&log, &t, 2),
            Outcome::TpmStateMismatch(_)
        ));
        let mut t = tpm([0; 32]);
        t.reset_count = 4;
        assert!(matches!(
            classify(&log, &t, 2),
            Outcome::RebootHidden { .. }
        ));
        t.reset_count = 2;
        assert!(matches!(
            classify(&log, &t, 2),
            Outcome::TpmStateMismatch(_)
        ));
    }
}
