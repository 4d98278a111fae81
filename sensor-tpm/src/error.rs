//! The crate's single error type, shared by the TPM side and the pure verification side.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No TPM configured and none found at the default device: the agent runs on, but the
    /// log is not anchored and must say so.
    #[error("no TPM: {0}")]
    NoTpm(String),
    #[error("invalid TPM configuration: {0}")]
    Config(String),
    /// The TPM (or the TCTI in front of it) refused or failed a command. `detail` carries the
    /// TSS response code text; the worker drops its connection and reconnects on the next call.
    #[error("TPM {op} failed: {detail}")]
    Tpm { op: &'static str, detail: String },
    /// The TPM did not answer within the configured time. The blocked command is abandoned to
    /// its thread; the next call starts a fresh connection.
    #[error("TPM did not answer {op} within {timeout:?}")]
    Timeout { op: &'static str, timeout: Duration },
    /// The worker's bounded queue is full: the TPM is slower than the callers.
    #[error("TPM worker queue is full ({depth} requests waiting)")]
    Busy { depth: usize },
    /// Too many earlier commands are still blocked inside the TPM stack; no new connection
    /// is opened until they return, so a hung TPM cannot make us pile up threads.
    #[error("TPM unavailable: {0}")]
    Unavailable(String),
    /// The configured NV index or persistent handle holds something that is not ours; we
    /// never overwrite it.
    #[error("TPM handle {handle:#010x} is in use by something else: {reason}")]
    HandleConflict { handle: u32, reason: String },
    /// The TPM answered with something we cannot use.
    #[error("unexpected TPM output: {0}")]
    Unexpected(String),

    // Verification (pure, no TPM needed).
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("attestation key unsuitable: {0}")]
    AkUnsuitable(String),
    #[error("quote signature does not verify with the attestation key")]
    BadSignature,
    #[error("quote was signed by a different key than the given attestation key")]
    SignerMismatch,
    #[error("quote qualifying data does not match the expected nonce")]
    NonceMismatch,
    #[error("quote does not cover exactly SHA-256 PCR {expected}")]
    SelectionMismatch { expected: u32 },
    #[error("quote PCR digest does not match the expected PCR value")]
    PcrMismatch,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
