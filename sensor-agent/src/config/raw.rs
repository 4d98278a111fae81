//! The file as written: every key optional so the user's file can be partial, unknown keys
//! refused. Nothing here is checked beyond its type.

use std::path::PathBuf;

use sensor_tpm::RawTpmSection;
use serde::Deserialize;

use super::ProcFile;

/// One file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    pub(super) agent: RawAgent,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) tpm: RawTpmSection,
    pub(super) forward: Option<RawForward>,
    pub(super) default_watches: Option<bool>,
    #[serde(default)]
    pub(super) unwatch: Vec<String>,
    #[serde(default)]
    pub(super) watch: Vec<RawWatch>,
    #[serde(default)]
    pub(super) owner: Vec<RawOwner>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    pub(super) state_dir: Option<PathBuf>,
    pub(super) ring_buffer_bytes: Option<u32>,
    pub(super) budget_per_second: Option<u32>,
    pub(super) budget_burst: Option<u32>,
    pub(super) fold_window: Option<String>,
    pub(super) proc_files: Option<Vec<ProcFile>>,
    pub(super) metrics_listen: Option<String>,
    pub(super) probe_mode: Option<String>,
}

/// `[log]` as written: durations are strings (`"1s"`, `"24h"`, `"90d"`, or `"off"` where a
/// limit can be switched off).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) batch_records: Option<usize>,
    pub(super) batch_interval: Option<String>,
    pub(super) key_rotation: Option<String>,
    pub(super) first_key_rotation: Option<String>,
    pub(super) max_pending_records: Option<usize>,
    pub(super) retention_max_bytes: Option<u64>,
    pub(super) retention_max_age: Option<String>,
}

/// `[forward]` as written; the whole section comes from one file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForward {
    pub(super) collectors: Vec<String>,
    pub(super) client_cert: PathBuf,
    pub(super) client_key: PathBuf,
    pub(super) ca: PathBuf,
    pub(super) server_name: Option<String>,
    pub(super) window: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWatch {
    pub(super) path: String,
    pub(super) kind: String,
    pub(super) owner: Option<String>,
    #[serde(default)]
    pub(super) exclude: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOwner {
    pub(super) owner: String,
    pub(super) unit: Option<String>,
    pub(super) user: Option<String>,
    pub(super) container: Option<String>,
    pub(super) exe: Option<String>,
}
