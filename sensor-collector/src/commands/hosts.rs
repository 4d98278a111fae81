//! `sensor-collector hosts` and `hosts approve HOST KEY`.

use sensor_collector::store::{Host, HostSummary};
use sensor_collector::Store;
use sensor_log::hex;

use crate::Failure;

#[derive(clap::Subcommand)]
pub enum HostsCommand {
    /// Pin a host's first key: its batches are accepted from then on, signed by this key or
    /// by the keys its log announces with it.
    Approve {
        /// The host id (32 hex digits, `host-id` in the agent's state directory).
        host: String,
        /// Its public key (64 hex digits, `sensorctl key show` on the host).
        key: String,
        /// The key epoch of that key.
        #[arg(long, default_value_t = 1)]
        key_epoch: u64,
    },
}

pub fn run(store: &mut dyn Store, command: Option<HostsCommand>) -> Result<(), Failure> {
    match command {
        None => list(store),
        Some(HostsCommand::Approve {
            host,
            key,
            key_epoch,
        }) => {
            let host_id = crate::host_id(&host)?;
            let public_key = hex::parse_public_key(&key)
                .map_err(|e| Failure::Usage(format!("invalid key: {e}")))?;
            let host_entry = Host {
                host_id,
                key_epoch,
                public_key,
            };
            if !store.enroll(&host_entry, "operator")? {
                return Err(Failure::Failed(format!(
                    "host {host} is already enrolled: its key is pinned"
                )));
            }
            outln!("approved host {host}, key epoch {key_epoch}");
            Ok(())
        }
    }
}

fn list(store: &mut dyn Store) -> Result<(), Failure> {
    outln!(
        "HOST                              KEY EPOCH  ENROLLED BY   BATCHES  LAST BATCH  ANCHORED  ALARMS  HEARD"
    );
    let now = sensor_log::time::wall_now_ns();
    for h in store.hosts()? {
        outln!(
            "{}  {:<9}  {:<12}  {:<7}  {:<10}  {:<8}  {:<6}  {} s ago",
            hex::encode(h.host.host_id),
            h.host.key_epoch,
            h.enrolled_by,
            h.batches,
            h.last_batch
                .map_or_else(|| "-".to_string(), |n| n.to_string()),
            anchored(&h),
            h.alarms,
            // By the collector's clock: when it last stored a batch of the host.
            now.saturating_sub(h.last_heard_ns) / 1_000_000_000
        );
    }
    Ok(())
}

/// `alarm` once a TPM check failed for the host (`tpm` alarms), else whether its quotes are
/// checked: `yes` once a replay base of its current TPM boot cycle is held.
fn anchored(h: &HostSummary) -> &'static str {
    match (h.tpm_alarms, h.anchored) {
        (1.., _) => "alarm",
        (0, true) => "yes",
        (0, false) => "no",
    }
}
