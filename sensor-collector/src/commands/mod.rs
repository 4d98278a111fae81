//! One module per subcommand.

pub mod alarms;
pub mod events;
pub mod hosts;
pub mod serve;
pub mod verify;

use sensor_collector::store::HostSummary;
use sensor_collector::Store;
use sensor_log::hex;

use crate::Failure;

/// Opens the store a `--store` URL names.
pub fn open(url: &str) -> Result<Box<dyn Store>, Failure> {
    Ok(sensor_collector::store::open(url)?)
}

/// The enrolled hosts, or only the one `--host` names, which must be enrolled.
pub fn enrolled(store: &mut dyn Store, host: Option<&str>) -> Result<Vec<HostSummary>, Failure> {
    let only = host.map(crate::host_id).transpose()?;
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
    Ok(hosts)
}
