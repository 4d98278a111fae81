//! `status.json`: what the agent publishes about itself for `sensorctl status`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const STATUS_FILE: &str = "status.json";

/// Larger status files are refused: the file is untrusted input for `sensorctl`.
const MAX_STATUS_BYTES: u64 = 1 << 20;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub pid: u32,
    /// RFC 3339 start time.
    pub started: String,
    /// RFC 3339 time of this update.
    pub updated: String,
    /// Probe name to mode (`btf_tracepoint`, `kprobe`, `disabled`, ...).
    pub probe_modes: BTreeMap<String, String>,
    /// Events by kind since start.
    pub events: BTreeMap<String, u64>,
    /// Lost events by source since start.
    pub losses: BTreeMap<String, u64>,
    /// TPM anchoring; absent in files written before anchoring existed.
    #[serde(default)]
    pub anchor: Option<AnchorStatus>,
    /// Where events go besides the log: `json` (stdout), `none`, or `stopped: <why>` once the
    /// output ended (its reader closed stdout), while the log goes on. Empty in files
    /// written before it was reported.
    #[serde(default)]
    pub output: String,
    /// Events not copied to the output since start because its reader was too slow (they
    /// are in the log).
    #[serde(default)]
    pub output_missed: u64,
}

/// What the anchor stage reports about the TPM anchor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorStatus {
    /// `anchored`, `failing` or `not anchored`.
    pub state: String,
    /// Why not anchored or failing; the TCTI when anchored.
    pub detail: String,
    pub pcr: Option<u32>,
    pub last_extended_batch: Option<u64>,
    pub last_quoted_batch: Option<u64>,
    pub nv_counter: Option<u64>,
    /// Anchoring gaps since start (spans of batches sealed without a known extend).
    pub gaps: u64,
    /// Commands sent to the TPM since start.
    pub tpm_commands: u64,
}

impl AgentStatus {
    /// Replaces the file atomically (write a temporary file, then rename) so a reader never
    /// sees half a file.
    pub fn write(&self, state_dir: &Path) -> Result<()> {
        let path = state_dir.join(STATUS_FILE);
        let tmp = state_dir.join(format!("{STATUS_FILE}.tmp"));
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::malformed("status", e))?;
        let mut file = fs::File::create(&tmp).map_err(Error::io(&tmp))?;
        file.write_all(&json)
            .and_then(|()| file.sync_all())
            .map_err(Error::io(&tmp))?;
        fs::rename(&tmp, &path).map_err(Error::io(&path))
    }

    /// `Ok(None)` when the agent never wrote one.
    pub fn read(state_dir: &Path) -> Result<Option<AgentStatus>> {
        let path = state_dir.join(STATUS_FILE);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path)(e)),
        };
        if meta.len() > MAX_STATUS_BYTES {
            return Err(Error::malformed(
                "status.json",
                format!("{} bytes is too large", meta.len()),
            ));
        }
        let bytes = fs::read(&path).map_err(Error::io(&path))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::malformed("status.json", e))
    }
}
