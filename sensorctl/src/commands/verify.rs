//! `sensorctl verify`: exit 0 when intact, 1 naming the first failure.

use std::path::Path;

use sensor_log::Verdict;

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// Pin the public key (64 hex digits) of the oldest retained batch instead of trusting
    /// the key recorded in the store.
    #[arg(long, value_name = "HEX")]
    public_key: Option<String>,
}

pub fn run(state_dir: &Path, args: &Args) -> Result<(), Failure> {
    let pinned = args
        .public_key
        .as_deref()
        .map(sensor_log::keys::parse_public_key)
        .transpose()
        .map_err(|e| Failure::Usage(format!("invalid --public-key: {e}")))?;
    let store = super::open(state_dir)?;
    match sensor_log::verify(&store, pinned.as_ref())? {
        Verdict::Intact(s) => {
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
            println!(
                "intact: {} records and {} batches checked, {} epoch{}, {span}{pruned}",
                s.records,
                s.batches,
                s.epochs,
                if s.epochs == 1 { "" } else { "s" }
            );
            if s.key_from_store {
                eprintln!("warning: the first public key was taken from the store itself (trust on first use); pin it with --public-key");
            }
            Ok(())
        }
        Verdict::Tampered(f) => Err(Failure::Failed(format!(
            "log verification failed at {}: {} ({})",
            f.position, f.reason, f.detail
        ))),
    }
}
