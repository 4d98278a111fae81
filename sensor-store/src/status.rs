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
    /// The agent's own executable (`Executable::of_process("self")` at start), so that
    /// `sensorctl status` does not take another program under the pid, or any binary named
    /// `sensor-agent`, for the agent. Absent in files of older agents.
    #[serde(default)]
    pub exe: Option<Executable>,
    /// The agent's `batch_interval` in milliseconds: a live agent seals a batch at least this
    /// often (a heartbeat when idle), which is what `sensorctl status` checks liveness by.
    /// Absent in files of older agents (then the default, 1 s, is assumed).
    #[serde(default)]
    pub batch_interval_ms: Option<u64>,
    /// Forwarding to collectors; absent when the agent has no `[forward]` section (and in
    /// files of older agents).
    #[serde(default)]
    pub forward: Option<ForwardStatus>,
}

/// What the forward stage reports (docs/forwarding.md).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardStatus {
    /// The collector of the current (or last) session: its address and the name it gave.
    pub collector: String,
    pub connected: bool,
    /// The newest batch a collector acknowledged (every batch up to it is held there).
    pub last_acked: Option<u64>,
    /// Sealed batches and records not acknowledged yet.
    pub batches_behind: u64,
    pub records_behind: u64,
    /// Age in seconds of the oldest batch not acknowledged yet.
    pub oldest_unacked_age_s: Option<u64>,
    /// The last refusal (`batch N: code: reason`, with its time) or connection failure.
    pub last_refusal: Option<String>,
    pub last_error: Option<String>,
}

/// An executable file as a process runs it: the path `/proc/PID/exe` names and the device
/// and inode of the file it is (the same even after the path was replaced or deleted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executable {
    pub path: String,
    pub dev: u64,
    pub ino: u64,
}

impl Executable {
    /// The executable of `/proc/<pid>` (`pid` may be `self`).
    pub fn of_process(pid: &str) -> Result<Executable> {
        use std::os::unix::fs::MetadataExt;
        let link = Path::new("/proc").join(pid).join("exe");
        let path = fs::read_link(&link).map_err(Error::io(&link))?;
        let meta = fs::metadata(&link).map_err(Error::io(&link))?;
        Ok(Executable {
            path: path.to_string_lossy().into_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// The same file (device and inode; the path may differ, e.g. ` (deleted)` after an
    /// upgrade replaced it).
    pub fn same_file(&self, other: &Executable) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
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
