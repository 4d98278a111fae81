//! The event pipeline: named stages joined by bounded channels.
//!
//! ```text
//! kernel ring buffer → read (+decode) → enrich ─┐
//!        per-CPU loss counters → loss ──────────┴→ output
//! ```
//! Channels carry batches, so a storm costs one channel operation per [`BATCH_LEN`] events.

pub mod decode;
pub mod enrich;
pub mod loss;
pub mod output;
pub mod read;

use std::sync::atomic::AtomicU64;

/// What travels between stages.
pub type Batch<T> = Vec<T>;

/// Most events in one batch.
pub const BATCH_LEN: usize = 256;

/// Batches a channel holds before its sender waits.
pub const CHANNEL_BATCHES: usize = 256;

/// Counters shared by the stages, for the periodic status line and `status`.
#[derive(Default, Debug)]
pub struct Counters {
    /// Records read from the ring buffer and decoded.
    pub kernel_events: AtomicU64,
    /// Records rejected by the decoder.
    pub decode_errors: AtomicU64,
    /// Events the kernel could not reserve room for.
    pub lost: AtomicU64,
    /// Events that left the enrich stage.
    pub events_out: AtomicU64,
}
