//! Where the TPM is and which of its resources the agent uses. See docs/tpm.md for why
//! these defaults.

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};

/// The kernel's resource-managed TPM device; used when no TCTI is configured.
pub const DEFAULT_DEVICE: &str = "/dev/tpmrm0";

/// PCR 13: non-resettable from locality 0 (unlike 16 and 23) and, on Linux, not owned by
/// IMA (10) or systemd (11, 12, 15), shim's MOK list (14), firmware (0-7) or the boot loader
/// (8, 9). Only systemd-stub may measure system extensions into it at boot, which is why the
/// verifier replays from the value read before the agent's first extend of the boot.
pub const DEFAULT_PCR: u32 = 13;

/// NV counter index in the owner range of the TCG handle registry (0x0180_0000..=0x01BF_FFFF).
pub const DEFAULT_NV_INDEX: u32 = 0x0180_5e01;

/// Persistent handle of the attestation key, in the owner-authorised persistent range
/// (0x8100_0000..=0x817F_FFFF), in the endorsement-key block because the AK is an
/// endorsement-hierarchy primary.
pub const DEFAULT_AK_HANDLE: u32 = 0x8101_5e01;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmConfig {
    /// TCTI string, e.g. `device:/dev/tpmrm0` or `swtpm:host=127.0.0.1,port=2321`.
    /// `None`: `/dev/tpmrm0` if it exists, else no TPM.
    pub tcti: Option<String>,
    /// PCR (SHA-256 bank) extended with every signed batch header digest.
    pub pcr: u32,
    /// NV index of the monotonic (hybrid) counter.
    pub nv_index: u32,
    /// Persistent handle of the attestation key.
    pub ak_handle: u32,
    /// How often the agent quotes the anchor PCR.
    pub quote_period: Duration,
    /// How often the agent advances the NV counter (also once at start and at clean stop).
    /// Never per event or batch: NV memory wears out.
    pub nv_interval: Duration,
    /// Longest wait for one TPM command before the caller gets `Error::Timeout`.
    /// The first call of a connection may also create the AK, hence the generous default.
    pub op_timeout: Duration,
    /// Requests waiting for the worker at most; beyond it callers get `Error::Busy`.
    pub queue_depth: usize,
    /// Create the AK and define the NV counter when they are absent (the agent). A verifier
    /// sets it false: it must change nothing on the TPM it checks.
    pub provision: bool,
}

impl Default for TpmConfig {
    fn default() -> TpmConfig {
        TpmConfig {
            tcti: None,
            pcr: DEFAULT_PCR,
            nv_index: DEFAULT_NV_INDEX,
            ak_handle: DEFAULT_AK_HANDLE,
            quote_period: Duration::from_secs(60),
            nv_interval: Duration::from_secs(3600),
            op_timeout: Duration::from_secs(10),
            queue_depth: 64,
            provision: true,
        }
    }
}

impl TpmConfig {
    /// The TCTI to use, or `Error::NoTpm` when none is configured and the default device is
    /// absent (the agent keeps running and reports the log as not anchored).
    pub fn resolve_tcti(&self) -> Result<String> {
        self.validate()?;
        match &self.tcti {
            Some(t) => Ok(t.clone()),
            None if Path::new(DEFAULT_DEVICE).exists() => Ok(format!("device:{DEFAULT_DEVICE}")),
            None => Err(Error::NoTpm(format!(
                "no tcti configured and {DEFAULT_DEVICE} does not exist"
            ))),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(Error::Config(s));
        if self.pcr > 23 {
            return bad(format!("pcr {} is outside 0..=23", self.pcr));
        }
        if matches!(self.pcr, 16 | 23) {
            return bad(format!(
                "pcr {} can be reset by any local root; pick a non-resettable PCR",
                self.pcr
            ));
        }
        if !(0x0100_0000..=0x01ff_ffff).contains(&self.nv_index) {
            return bad(format!(
                "nv_index {:#010x} is not an NV index",
                self.nv_index
            ));
        }
        if !(0x8100_0000..=0x817f_ffff).contains(&self.ak_handle) {
            return bad(format!(
                "ak_handle {:#010x} is not an owner persistent handle",
                self.ak_handle
            ));
        }
        if self.queue_depth == 0 || self.queue_depth > 4096 {
            return bad(format!(
                "queue_depth {} is outside 1..=4096",
                self.queue_depth
            ));
        }
        if self.op_timeout.is_zero() {
            return bad("op_timeout must be positive".into());
        }
        if let Some(t) = &self.tcti {
            if !["device", "swtpm", "mssim", "tabrmd"]
                .iter()
                .any(|p| t == p || t.starts_with(&format!("{p}:")))
            {
                return bad(format!(
                    "tcti {t:?}: expected device:, swtpm:, mssim: or tabrmd:"
                ));
            }
        }
        Ok(())
    }
}
