//! `sensor-collector verify [--host H]`: every batch held, verified again host by host with
//! the verifier `sensorctl verify` and the ingest use, from the pinned key on, and its TPM
//! quotes and bases replayed as the ingest did; the checkpoint held for the host must be where
//! the batches lead, and every TPM check that fails must have its `tpm` alarm.

use ed25519_dalek::VerifyingKey;
use sensor_collector::ingest::anchoring;
use sensor_collector::store::Held;
use sensor_collector::Store;
use sensor_log::batch::digest;
use sensor_log::forward::BatchMessage;
use sensor_log::hex;
use sensor_log::{BatchHeader, Verifier};
use sensor_tpm::remote::{Point, Replay};

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// Only this host (32 hex digits).
    #[arg(long)]
    host: Option<String>,
}

pub fn run(store: &mut dyn Store, args: &Args) -> Result<(), Failure> {
    for h in super::enrolled(store, args.host.as_deref())? {
        let name = hex::encode(h.host.host_id);
        let failed = |detail: String| Failure::Failed(format!("host {name}: {detail}"));
        let mut verifier = Verifier::new(h.host.public_key);
        let mut failure = None;
        let mut records = 0;
        let mut tpm = Replay::default();
        // The replayed batches of the current cycle, for the quotes that name them.
        let mut points: Vec<Point> = Vec::new();
        let mut faults: Vec<(u64, String)> = Vec::new();
        let alarms = store.alarms(&h.host.host_id)?;
        // Batches taken across a gap the host declared (it pruned what it never forwarded):
        // verified from their own signature on, with the key in force, as the ingest did.
        let gaps: Vec<u64> = alarms
            .iter()
            .filter(|a| a.kind == "gap")
            .map(|a| a.batch)
            .collect();
        store.each_batch(&h.host.host_id, &mut |batch: BatchMessage| {
            if failure.is_some() {
                return Ok(());
            }
            let number = BatchHeader::decode(&batch.header).map_or(0, |b| b.number);
            if let Some(cp) = verifier.checkpoint() {
                if number > cp.next_batch && gaps.contains(&number) {
                    let key = VerifyingKey::from_bytes(&cp.public_key).map_err(|e| {
                        sensor_collector::Error::Corrupt(format!("a checkpoint key: {e}"))
                    })?;
                    verifier = Verifier::new(key);
                    tpm = Replay::default();
                    points.clear();
                }
            }
            let items: Vec<&[u8]> = batch.records.iter().map(Vec::as_slice).collect();
            records += items.len();
            let header = match verifier.message(&batch.header, &batch.signature, &items) {
                Ok(header) => header,
                Err(f) => {
                    failure = Some(f);
                    return Ok(());
                }
            };
            let earlier = |below, from| {
                Ok(points
                    .iter()
                    .rev()
                    .find(|p| p.number < below && p.number >= from)
                    .copied())
            };
            let (point, found) = anchoring(
                &mut tpm,
                &header,
                &digest(&batch.header),
                &batch.records,
                earlier,
            )?;
            match tpm.start {
                Some(start) => points.retain(|p| p.number >= start.replay_from),
                None => points.clear(),
            }
            points.extend(point);
            faults.extend(found.into_iter().map(|f| (header.number, f)));
            Ok(())
        })?;
        if let Some(f) = failure {
            return Err(failed(format!("verification failed at {f}")));
        }
        let walked = verifier.checkpoint().map(|log| Held { log, tpm });
        if walked != store.checkpoint(&h.host.host_id)? {
            return Err(failed(
                "the checkpoint held for the host is not where its batches lead".to_string(),
            ));
        }
        if let Some((batch, fault)) = faults
            .iter()
            .find(|(n, _)| !alarms.iter().any(|a| a.kind == "tpm" && a.batch == *n))
        {
            return Err(failed(format!(
                "a TPM check fails at batch {batch} and no tpm alarm says so: {fault}"
            )));
        }
        let anchored = match (faults.first(), h.anchored) {
            (Some((batch, _)), _) => format!(
                "; {} TPM checks failed, the first at batch {batch}, each with its alarm",
                faults.len()
            ),
            (None, true) => "; TPM quotes and bases consistent".to_string(),
            (None, false) => String::new(),
        };
        outln!(
            "host {name}: intact: {} batches, {records} records{anchored}",
            h.batches
        );
    }
    Ok(())
}
