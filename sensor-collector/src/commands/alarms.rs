//! `sensor-collector alarms [--host H] [--json]`: every alarm raised, host by host, oldest
//! first, with what raised it (docs/collector.md, "Alarms").

use sensor_collector::Store;
use sensor_log::hex;
use sensor_log::time::rfc3339;
use serde_json::json;

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// Only this host (32 hex digits).
    #[arg(long)]
    host: Option<String>,
    /// One JSON object per line: raised, host, kind, batch, detail.
    #[arg(long)]
    json: bool,
}

pub fn run(store: &mut dyn Store, args: &Args) -> Result<(), Failure> {
    let hosts = super::enrolled(store, args.host.as_deref())?;
    if !args.json {
        outln!("RAISED                          HOST                              KIND           BATCH  DETAIL");
    }
    for h in hosts {
        let host = hex::encode(h.host.host_id);
        for a in store.alarms(&h.host.host_id)? {
            let raised = rfc3339(a.raised_ns);
            if args.json {
                outln!(
                    "{}",
                    json!({"raised": raised, "host": host, "kind": a.kind, "batch": a.batch, "detail": a.detail})
                );
            } else {
                outln!(
                    "{raised:<30}  {host}  {:<13}  {:<5}  {}",
                    a.kind,
                    a.batch,
                    a.detail
                );
            }
        }
    }
    Ok(())
}
