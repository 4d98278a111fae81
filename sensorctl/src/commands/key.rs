//! `sensorctl key show`.

use std::path::Path;

use crate::Failure;

pub fn show(state_dir: &Path) -> Result<(), Failure> {
    let store = super::open(state_dir)?;
    let key = store
        .current_key()?
        .ok_or_else(|| Failure::Failed("the log has no signing key yet".to_string()))?;
    outln!(
        "public key: {}",
        sensor_log::hex::encode(key.public_key.as_bytes())
    );
    outln!("key epoch:  {}", key.key_epoch);
    Ok(())
}
