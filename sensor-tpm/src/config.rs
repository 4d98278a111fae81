//! Where the TPM is and which of its resources the agent uses, and the `[tpm]` section of
//! the agent's config file that says so. See docs/tpm.md for why these defaults.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

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

    /// Refuses settings that would anchor nothing (a resettable PCR) or touch what is not
    /// ours; the error names the `[tpm]` key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, message: String| Err(ConfigError { key, message });
        if self.pcr > 23 {
            return bad("tpm.pcr", format!("pcr {} is outside 0..=23", self.pcr));
        }
        if matches!(self.pcr, 16 | 23) {
            return bad(
                "tpm.pcr",
                format!(
                    "pcr {} can be reset by any local root; pick a non-resettable PCR",
                    self.pcr
                ),
            );
        }
        if !(0x0100_0000..=0x01ff_ffff).contains(&self.nv_index) {
            return bad(
                "tpm.nv_index",
                format!("nv_index {:#010x} is not an NV index", self.nv_index),
            );
        }
        if !(0x8100_0000..=0x817f_ffff).contains(&self.ak_handle) {
            return bad(
                "tpm.ak_handle",
                format!(
                    "ak_handle {:#010x} is not an owner persistent handle",
                    self.ak_handle
                ),
            );
        }
        if self.queue_depth == 0 || self.queue_depth > 4096 {
            return bad(
                "tpm.queue_depth",
                format!("queue_depth {} is outside 1..=4096", self.queue_depth),
            );
        }
        if self.op_timeout.is_zero() {
            return bad("tpm.op_timeout", "op_timeout must be positive".into());
        }
        if let Some(t) = &self.tcti {
            if !["device", "swtpm", "mssim", "tabrmd"]
                .iter()
                .any(|p| t == p || t.starts_with(&format!("{p}:")))
            {
                return bad(
                    "tpm.tcti",
                    format!("tcti {t:?}: expected device:, swtpm:, mssim: or tabrmd:"),
                );
            }
        }
        Ok(())
    }
}

/// A wrong `[tpm]` key: which one (`tpm.pcr`) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: &'static str,
    pub message: String,
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Config(e.to_string())
    }
}

/// A duration key as the config file writes it (`"1s"`, `"24h"`), more than zero. Public so
/// that every section of the agent's file reads durations and words their errors alike.
pub fn parse_duration(key: &'static str, text: &str) -> Result<Duration, ConfigError> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(ConfigError {
            key,
            message: "must be more than zero".into(),
        }),
        Err(e) => Err(ConfigError {
            key,
            message: format!("`{text}` is not a duration like \"1s\" or \"24h\" ({e})"),
        }),
    }
}

/// `[tpm]` as written: every key optional. `tcti = "off"` switches anchoring off; unset
/// means `/dev/tpmrm0` if it exists.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTpmSection {
    tcti: Option<String>,
    pcr: Option<u32>,
    nv_index: Option<u32>,
    ak_handle: Option<u32>,
    quote_period: Option<String>,
    nv_interval: Option<String>,
    op_timeout: Option<String>,
    queue_depth: Option<usize>,
}

/// `[tpm]` of one file after validation, every key still optional so that a user's file
/// can set some keys over the defaults' file ([`TpmSection::or`]).
#[derive(Debug, Default)]
pub struct TpmSection {
    /// `Some(None)`: `"off"`.
    tcti: Option<Option<String>>,
    pcr: Option<u32>,
    nv_index: Option<u32>,
    ak_handle: Option<u32>,
    quote_period: Option<Duration>,
    nv_interval: Option<Duration>,
    op_timeout: Option<Duration>,
    queue_depth: Option<usize>,
}

impl TpmSection {
    /// Reads the durations and checks this file's keys over the built-in defaults, so a
    /// bad key is reported against the file that sets it.
    pub fn parse(raw: &RawTpmSection) -> Result<TpmSection, ConfigError> {
        let duration = |key, text: &Option<String>| {
            text.as_deref().map(|t| parse_duration(key, t)).transpose()
        };
        let section = TpmSection {
            tcti: raw.tcti.as_ref().map(|t| (t != "off").then(|| t.clone())),
            pcr: raw.pcr,
            nv_index: raw.nv_index,
            ak_handle: raw.ak_handle,
            quote_period: duration("tpm.quote_period", &raw.quote_period)?,
            nv_interval: duration("tpm.nv_interval", &raw.nv_interval)?,
            op_timeout: duration("tpm.op_timeout", &raw.op_timeout)?,
            queue_depth: raw.queue_depth,
        };
        if let Some(config) = section.config() {
            config.validate()?;
        }
        Ok(section)
    }

    /// The keys set here, and `lower`'s where not.
    pub fn or(self, lower: TpmSection) -> TpmSection {
        TpmSection {
            tcti: self.tcti.or(lower.tcti),
            pcr: self.pcr.or(lower.pcr),
            nv_index: self.nv_index.or(lower.nv_index),
            ak_handle: self.ak_handle.or(lower.ak_handle),
            quote_period: self.quote_period.or(lower.quote_period),
            nv_interval: self.nv_interval.or(lower.nv_interval),
            op_timeout: self.op_timeout.or(lower.op_timeout),
            queue_depth: self.queue_depth.or(lower.queue_depth),
        }
    }

    /// The keys set here over [`TpmConfig::default`]; `None` when anchoring is off.
    pub fn config(&self) -> Option<TpmConfig> {
        let base = TpmConfig::default();
        let tcti = match &self.tcti {
            Some(None) => return None,
            Some(Some(t)) => Some(t.clone()),
            None => base.tcti,
        };
        Some(TpmConfig {
            tcti,
            pcr: self.pcr.unwrap_or(base.pcr),
            nv_index: self.nv_index.unwrap_or(base.nv_index),
            ak_handle: self.ak_handle.unwrap_or(base.ak_handle),
            quote_period: self.quote_period.unwrap_or(base.quote_period),
            nv_interval: self.nv_interval.unwrap_or(base.nv_interval),
            op_timeout: self.op_timeout.unwrap_or(base.op_timeout),
            queue_depth: self.queue_depth.unwrap_or(base.queue_depth),
            ..base
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_errors_carry_the_key() {
        let parse = |raw: RawTpmSection| TpmSection::parse(&raw).map(|s| s.config());
        let key = |raw| parse(raw).unwrap_err().key;
        assert_eq!(
            key(RawTpmSection {
                pcr: Some(23),
                ..RawTpmSection::default()
            }),
            "tpm.pcr"
        );
        assert_eq!(
            key(RawTpmSection {
                nv_interval: Some("0s".into()),
                ..RawTpmSection::default()
            }),
            "tpm.nv_interval"
        );
        assert_eq!(
            key(RawTpmSection {
                ak_handle: Some(1),
                ..RawTpmSection::default()
            }),
            "tpm.ak_handle"
        );
        // "off" switches anchoring off, and then nothing else is checked.
        let off = RawTpmSection {
            tcti: Some("off".into()),
            pcr: Some(16),
            ..RawTpmSection::default()
        };
        assert_eq!(parse(off).unwrap(), None);
        let set = TpmSection::parse(&RawTpmSection {
            pcr: Some(14),
            ..RawTpmSection::default()
        })
        .unwrap();
        let lower = TpmSection::parse(&RawTpmSection {
            pcr: Some(12),
            quote_period: Some("5s".into()),
            ..RawTpmSection::default()
        })
        .unwrap();
        let merged = set.or(lower).config().unwrap();
        assert_eq!(
            (merged.pcr, merged.quote_period),
            (14, Duration::from_secs(5))
        );
    }
}
