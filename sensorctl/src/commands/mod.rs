//! One module per subcommand.

pub mod events;
pub mod export;
pub mod identities;
pub mod key;
pub mod status;
pub mod verify;

pub use sensor_view::table::{print_table, short_time};

use std::path::Path;

use sensor_store::Store;

use crate::Failure;

/// Opens the store read-only; a missing directory or log is a usage error naming the dir.
pub fn open(state_dir: &Path) -> Result<Store, Failure> {
    if !state_dir.is_dir() {
        return Err(Failure::Usage(format!(
            "state directory {} does not exist: the agent has not run there (use --state-dir)",
            state_dir.display()
        )));
    }
    Ok(Store::open_read_only(state_dir)?)
}
