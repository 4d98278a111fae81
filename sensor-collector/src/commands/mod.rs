//! One module per subcommand.

pub mod events;
pub mod hosts;
pub mod serve;
pub mod verify;

use sensor_collector::Store;

use crate::Failure;

/// Opens the store a `--store` URL names.
pub fn open(url: &str) -> Result<Box<dyn Store>, Failure> {
    Ok(sensor_collector::store::open(url)?)
}
