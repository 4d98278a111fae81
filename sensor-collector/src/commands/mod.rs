//! One module per subcommand.

pub mod hosts;
pub mod verify;

use std::path::Path;

use sensor_collector::Store;

use crate::Failure;

/// Opens the store a `--store` URL names.
pub fn open(url: &str) -> Result<Store, Failure> {
    let Some(path) = url.strip_prefix("sqlite:") else {
        return Err(Failure::Usage(format!(
            "--store {url}: expected sqlite:PATH"
        )));
    };
    Ok(Store::open(Path::new(path))?)
}
