//! The event pipeline: named stages joined by bounded channels.
//!
//! ```text
//! kernel ring buffer → read (+decode) ┬→ enrich ─┐
//!          kernel fold map → fold ────┘           │
//!   kernel loss and budget counters → loss ───────┴→ chain (+sign, store) → output
//!                                                       ├→ sealed batches → anchor
//!                                     the store (outbox) → forward → collectors
//! ```
//! Channels carry batches, so a storm costs one channel operation per [`BATCH_LEN`] events.

pub mod anchor;
pub mod chain;
pub mod decode;
pub mod enrich;
pub mod fault;
pub mod fold;
pub mod forward;
pub mod loss;
pub mod metrics;
pub mod output;
pub mod read;
pub mod status;
pub mod supervise;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64},
        Mutex,
    },
};

use sensor_log::{Kind, SealedBatch};
use sensor_store::AnchorStatus;

/// What travels between stages.
pub type Batch<T> = Vec<T>;

/// Most events in one batch.
pub const BATCH_LEN: usize = 256;

/// Batches a channel holds before its sender waits.
pub const CHANNEL_BATCHES: usize = 256;

/// Counters shared by the stages, for the periodic status line and `status.json`.
#[derive(Default, Debug)]
pub struct Counters {
    /// Records read from the ring buffer and decoded.
    pub kernel_events: AtomicU64,
    /// Records rejected by the decoder.
    pub decode_errors: AtomicU64,
    /// Events the log writer failed to chain (reported as `agent_chain` losses).
    pub chain_errors: AtomicU64,
    /// Events that left the enrich stage.
    pub events_out: AtomicU64,
    /// Accesses the kernel folded, reported in repeats.
    pub folded: AtomicU64,
    /// Chained events by kind, and lost events by source, since start.
    pub events: Mutex<BTreeMap<String, u64>>,
    pub losses: Mutex<BTreeMap<String, u64>>,
    /// The newest durable batch: (number, first seq + count, chain head).
    pub last_batch: Mutex<Option<(u64, u64, [u8; 32])>>,
    /// TPM anchoring, as the anchor stage reports it.
    pub anchor: Mutex<AnchorStatus>,
    /// The output as `status.json` reports it (see `AgentStatus::output`).
    pub output: Mutex<String>,
    /// Events not copied to the output because its reader was too slow.
    pub output_missed: AtomicU64,
    /// Woken at every sealed batch, for the forward stage.
    pub sealed_notify: tokio::sync::Notify,
    /// Set once the chain stage closed the log at stop: no batch follows the last sealed.
    pub log_closed: AtomicBool,
    /// Forwarding, as the forward stage reports it; `None` without `[forward]`.
    pub forward: Mutex<Option<sensor_store::ForwardStatus>>,
}

impl Counters {
    pub fn count_events(&self, kinds: impl Iterator<Item = Kind>) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        for kind in kinds {
            *events.entry(kind.as_str().to_owned()).or_default() += 1;
        }
    }

    pub fn count_loss(&self, source: &str, n: u64) {
        let mut losses = self.losses.lock().unwrap_or_else(|p| p.into_inner());
        *losses.entry(source.to_owned()).or_default() += n;
    }

    pub fn total_lost(&self) -> u64 {
        self.losses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }

    pub fn sealed(&self, batch: &SealedBatch) {
        let h = &batch.header;
        *self.last_batch.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((h.number, h.first_seq + h.count, h.chain_head));
        self.sealed_notify.notify_one();
    }
}
