//! Anchors the agent's tamper-evident log in a TPM, and verifies the anchor.
//!
//! The log (crate `sensor-log`) proves its own integrity, but not its completeness: a cut
//! tail or a restored older copy still verifies. The TPM holds what the disk cannot fake:
//!
//! - a PCR extended with every signed batch header digest (`TpmWorker::extend`): truncation
//!   and forgery within one boot show as no prefix of the log replaying to the PCR;
//! - a monotonic NV counter advanced on a slow schedule and recorded in batch anchors
//!   (`TpmWorker::advance_counter`): a rolled-back disk shows a counter behind the TPM;
//! - quotes signed by a TPM-resident attestation key (`TpmWorker::quote`), carrying the PCR
//!   digest and the reset/restart counters to a verifier that has no TPM access.
//!
//! The verification side (`verify_quote`, `replay`, `classify`) is pure Rust and needs
//! neither a TPM nor the TSS library: build with `default-features = false` (a collector
//! does). The device side (`TpmWorker`) is the default feature `device`, over libtss2. See
//! docs/tpm.md for handles, schedule and costs.

pub mod attest;
pub mod config;
#[cfg(feature = "device")]
mod device;
pub mod error;
pub mod remote;
pub mod replay;
#[cfg(feature = "device")]
mod worker;

pub use attest::{
    parse_attest, verify_quote, verify_quote_signed, AkPublic, ClockInfo, ParsedAttest, Quote,
    QuoteInfo,
};
pub use config::{
    parse_duration, ConfigError, RawTpmSection, TpmConfig, TpmSection, DEFAULT_AK_HANDLE,
    DEFAULT_DEVICE, DEFAULT_NV_INDEX, DEFAULT_PCR,
};
#[cfg(feature = "device")]
pub use device::TpmInfo;
pub use error::{Error, Result};
pub use remote::{check_stored_quote, Replay};
pub use replay::{
    bound_batch_number, classify, counter_outcome, extend_pcr, matching_prefix, quote_binding,
    replay, BaseMark, LogAnchorState, Outcome, TpmState,
};
#[cfg(feature = "device")]
pub use worker::TpmWorker;
