//! `sensorctl verify`: exit 0 when intact, 1 naming the first failure. With `--tpm`, also
//! compare the log with the TPM it is anchored in (docs/tpm.md, "What `sensorctl verify
//! --tpm` checks").

use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use sensor_log::batch_file::BatchFile;
use sensor_log::{hex, AnchorBase, AnchorTrail, Summary, Verdict};
use sensor_store::Store;
use sensor_tpm::{
    check_stored_quote, classify, replay, verify_quote_signed, AkPublic, Error as TpmError,
    LogAnchorState, Outcome, Quote, QuoteInfo, TpmConfig, TpmState, TpmWorker,
};

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// Pin the public key (64 hex digits) of the oldest retained batch instead of trusting
    /// the key recorded in the store.
    #[arg(long, value_name = "HEX")]
    public_key: Option<String>,
    /// Also check the log against the TPM: replay the batch digests of the newest TPM boot
    /// cycle to the live PCR, every replay base of that cycle and the latest stored quote, and
    /// compare the NV counter, the reset/restart counts and the attestation key. Changes
    /// nothing on the TPM. TCTI like `device:/dev/tpmrm0` (the default when it exists) or
    /// `swtpm:host=127.0.0.1,port=2321`.
    #[arg(long, value_name = "TCTI", num_args = 0..=1, default_missing_value = "")]
    tpm: Option<String>,
    /// Verify a batch file written by `sensorctl export` instead of the state directory's log.
    #[arg(long, value_name = "FILE", conflicts_with = "tpm")]
    file: Option<PathBuf>,
}

pub fn run(state_dir: &Path, args: &Args) -> Result<(), Failure> {
    let pinned = args
        .public_key
        .as_deref()
        .map(sensor_log::hex::parse_public_key)
        .transpose()
        .map_err(|e| Failure::Usage(format!("invalid --public-key: {e}")))?;
    if let Some(path) = &args.file {
        let mut file = BatchFile::open(path)
            .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
        let verdict = sensor_log::verify(&mut file, pinned.as_ref())
            .map_err(|e| Failure::Failed(format!("{}: {e}", path.display())))?;
        report(&summary_of(verdict)?);
        return Ok(());
    }
    let store = super::open(state_dir)?;
    let summary = intact(&store, pinned.as_ref())?;
    report(&summary);
    let Some(tcti) = &args.tpm else {
        return Ok(());
    };
    let tcti = (!tcti.is_empty()).then(|| tcti.clone());
    let tpm = Live::read(&summary.anchor, tcti)?;
    let verdict = match tpm.check(&summary.anchor) {
        // The agent may have sealed and extended batches after the walk read the store:
        // the PCR is then ahead of what was read, so read the grown log once more.
        Err(_) if grown(&store, &summary)? => {
            let summary = intact(&store, pinned.as_ref())?;
            tpm.check(&summary.anchor)
        }
        v => v,
    };
    outln!("{}", verdict?);
    Ok(())
}

fn intact(store: &Store, pinned: Option<&VerifyingKey>) -> Result<Summary, Failure> {
    summary_of(sensor_store::verify(store, pinned)?)
}

fn summary_of(verdict: Verdict) -> Result<Summary, Failure> {
    match verdict {
        Verdict::Intact(s) => Ok(s),
        Verdict::Tampered(f) => Err(Failure::Failed(format!(
            "log verification failed at {}: {} ({})",
            f.position, f.reason, f.detail
        ))),
    }
}

fn grown(store: &Store, summary: &Summary) -> Result<bool, Failure> {
    Ok(store
        .last_batch()?
        .is_some_and(|b| b.number > summary.anchor.last_batch))
}

fn report(s: &Summary) {
    let span = if s.records == 0 {
        "no records".to_string()
    } else {
        format!(
            "{} to {}",
            super::short_time(s.first_wall_ns),
            super::short_time(s.last_wall_ns)
        )
    };
    let pruned = s
        .pruned_before
        .map(|p| format!(", starting at seq {p} after pruning"))
        .unwrap_or_default();
    outln!(
        "intact: {} records and {} batches checked, {} epoch{}, {span}{pruned}",
        s.records,
        s.batches,
        s.epochs,
        if s.epochs == 1 { "" } else { "s" }
    );
    if s.key_from_store {
        errln!("warning: the first public key was taken from the log itself (its store or file) (trust on first use); pin it with --public-key");
    }
}

fn failed(
    position: impl std::fmt::Display,
    reason: &str,
    detail: impl std::fmt::Display,
) -> Failure {
    Failure::Failed(format!(
        "tpm verification failed at {position}: {reason} ({detail})"
    ))
}

/// What the TPM says now: a fresh quote over a random nonce by the AK the log pinned (so the
/// PCR value is the TPM's, not a replayed answer), and the worker to read the counter with.
struct Live {
    worker: TpmWorker,
    ak: AkPublic,
    quote: Quote,
    clock: QuoteInfo,
}

/// The span to replay, or why there is none: an alarm the agent recorded, a base that names
/// another attestation key, or no anchor.
fn base_of(trail: &AnchorTrail) -> Result<&AnchorBase, Failure> {
    if let Some((seq, reason, detail)) = &trail.alarm {
        return Err(failed(
            format_args!("seq {seq}"),
            reason,
            format_args!("the agent recorded it: {detail}"),
        ));
    }
    if let Some(seq) = trail.ak_changed {
        return Err(failed(
            format_args!("seq {seq}"),
            Outcome::TpmStateMismatch(String::new()).reason(),
            "this replay base names another attestation key than the one the log pinned",
        ));
    }
    trail.base().ok_or_else(|| {
        Failure::Failed(format!(
            "tpm verification failed: not anchored ({})",
            trail
                .unanchored
                .as_deref()
                .unwrap_or("the log has no TPM anchor record")
        ))
    })
}

impl Live {
    fn read(trail: &AnchorTrail, tcti: Option<String>) -> Result<Live, Failure> {
        let base = base_of(trail)?;
        let at = format!("batch {}", trail.last_batch);
        let mismatch = |detail: String| {
            failed(
                &at,
                Outcome::TpmStateMismatch(String::new()).reason(),
                detail,
            )
        };
        let worker = TpmWorker::start(TpmConfig {
            tcti,
            pcr: base.pcr_index,
            nv_index: base.nv_index,
            ak_handle: base.ak_handle,
            provision: false,
            ..TpmConfig::default()
        })
        .map_err(unreachable)?;
        let info = worker.connect().map_err(|e| match e {
            TpmError::HandleConflict { .. } => {
                mismatch(format!("{e}: another TPM, or a cleared one"))
            }
            e => unreachable(e),
        })?;
        let ak = AkPublic {
            public_area: trail.ak_public.clone().unwrap_or_default(),
        };
        if info.ak_public != ak {
            return Err(mismatch(
                "the key at the attestation key's handle is not the one the log pinned: another TPM, a cleared one, or a replaced key".into(),
            ));
        }
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce)
            .map_err(|e| Failure::Failed(format!("tpm verification: random source: {e}")))?;
        let quote = worker.quote(nonce).map_err(unreachable)?;
        // Its PCR digest is matched in `check`: the running agent may have extended the
        // PCR between the quote and the read of its value.
        let clock = verify_quote_signed(&quote, &ak, &nonce)
            .map_err(|e| mismatch(format!("the TPM's own quote does not verify: {e}")))?;
        Ok(Live {
            worker,
            ak,
            quote,
            clock,
        })
    }

    /// One line saying what matched, or the failure naming its reason and position.
    fn check(&self, trail: &AnchorTrail) -> Result<String, Failure> {
        let base = base_of(trail)?;
        let stored_quote = self.stored_quote(trail, base)?;
        let counter = self.worker.read_counter().map_err(unreachable)?;
        let log = LogAnchorState::of_trail(trail, (base.reset_count, base.restart_count));
        let clock = self.clock.clock;
        let pcr_value = log.quoted_pcr(&self.clock.pcr_digest, self.quote.pcr_value);
        let tpm = TpmState {
            pcr_value,
            covers_batch: stored_quote,
            nv_counter: Some(counter),
            reset_count: clock.reset_count,
            restart_count: clock.restart_count,
        };
        let last = trail.last_batch;
        match classify(&log, &tpm) {
            Outcome::Consistent {
                anchored,
                unanchored,
            } => Ok(format!(
                "tpm: consistent: {anchored} batches from batch {} replay to PCR {} = {}, {unanchored} newer not yet extended; {} replay base{} continuous; NV counter {counter}; reset count {}, restart count {}{}",
                base.replay_from,
                base.pcr_index,
                hex::encode(pcr_value),
                log.bases.len(),
                if log.bases.len() == 1 { "" } else { "s" },
                clock.reset_count,
                clock.restart_count,
                stored_quote
                    .map(|b| format!("; stored quote of batch {b} verified"))
                    .unwrap_or_default(),
            )),
            o @ Outcome::TailTruncated {
                at_base: Some(b), ..
            } => Err(failed(format_args!("seq {}", b.seq), o.reason(), o.detail())),
            o @ Outcome::TailTruncated { .. } => Err(failed(
                format_args!("batch {}", last + 1),
                o.reason(),
                o.detail(),
            )),
            o => Err(failed(format_args!("batch {last}"), o.reason(), o.detail())),
        }
    }

    /// Checks the newest quote the agent stored for this cycle against the log: its binding
    /// names the batch's header digest, its PCR digest the replay up to that batch. Returns
    /// the batch it vouches for.
    fn stored_quote(&self, trail: &AnchorTrail, base: &AnchorBase) -> Result<Option<u64>, Failure> {
        let Some(q) = &trail.quote else {
            return Ok(None);
        };
        let forged =
            |detail: String| failed(format_args!("batch {}", q.batch), "forged header", detail);
        let index = trail
            .anchored
            .iter()
            .position(|(n, _)| *n == q.batch)
            .ok_or_else(|| {
                forged("a stored quote names a batch outside the anchored span".into())
            })?;
        let digests: Vec<[u8; 32]> = trail.anchored[..=index].iter().map(|(_, d)| *d).collect();
        let pcr = replay(base.pcr_value, &digests)
            .last()
            .unwrap_or(base.pcr_value);
        match check_stored_quote(q, base.pcr_index, &self.ak, &digests[index], &pcr) {
            Ok(_) => Ok(Some(q.batch)),
            Err(TpmError::NonceMismatch) => Err(forged(
                "the stored quote was taken over a different header for this batch".into(),
            )),
            Err(TpmError::PcrMismatch) => Err(failed(
                format_args!("batches {}..={}", base.replay_from, q.batch),
                "forged header",
                "the stored quote's PCR differs from the replay of these batches",
            )),
            Err(e) => Err(forged(format!("the stored quote does not verify: {e}"))),
        }
    }
}

fn unreachable(e: TpmError) -> Failure {
    Failure::Failed(format!("tpm verification: {e}"))
}
