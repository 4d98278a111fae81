//! `sensor-collector verify [--host H]`: every batch held, verified again host by host with
//! the verifier `sensorctl verify` and the ingest use, from the pinned key on; the checkpoint
//! held for the host must be where the batches lead.

use sensor_collector::Store;
use sensor_log::forward::BatchMessage;
use sensor_log::hex;
use sensor_log::Verifier;

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// Only this host (32 hex digits).
    #[arg(long)]
    host: Option<String>,
}

pub fn run(store: &mut dyn Store, args: &Args) -> Result<(), Failure> {
    let only = args.host.as_deref().map(crate::host_id).transpose()?;
    let hosts: Vec<_> = store
        .hosts()?
        .into_iter()
        .filter(|h| only.is_none_or(|id| id == h.host.host_id))
        .collect();
    if let (Some(id), true) = (only, hosts.is_empty()) {
        return Err(Failure::Usage(format!(
            "host {} is not enrolled",
            hex::encode(id)
        )));
    }
    for h in hosts {
        let name = hex::encode(h.host.host_id);
        let failed = |detail: String| Failure::Failed(format!("host {name}: {detail}"));
        let mut verifier = Verifier::new(h.host.public_key);
        let mut failure = None;
        let mut records = 0;
        store.each_batch(&h.host.host_id, &mut |batch: BatchMessage| {
            if failure.is_none() {
                let items: Vec<&[u8]> = batch.records.iter().map(Vec::as_slice).collect();
                records += items.len();
                if let Err(f) = verifier.message(&batch.header, &batch.signature, &items) {
                    failure = Some(f);
                }
            }
            Ok(())
        })?;
        if let Some(f) = failure {
            return Err(failed(format!("verification failed at {f}")));
        }
        if verifier.checkpoint() != store.checkpoint(&h.host.host_id)?.map(|held| held.log) {
            return Err(failed(
                "the checkpoint held for the host is not where its batches lead".to_string(),
            ));
        }
        outln!(
            "host {name}: intact: {} batches, {records} records",
            h.batches
        );
    }
    Ok(())
}
