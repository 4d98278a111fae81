//! Chain stage: gives each event its sequence number and chain hash in the log, and seals
//! due batches (Merkle root, Ed25519 signature, one durable SQLite transaction). Events then
//! go on to the output stage (waiting for it at most briefly), sealed batches to the anchor
//! stage.
//!
//! The anchor stage is fed with `try_send`: a TPM that is slow or gone costs batches skipped
//! for anchoring (recorded as a gap by the anchor stage), never a stalled chain. Its notes
//! (entries to chain, the anchor for later headers) are applied before every seal.
//!
//! A full disk never stops the pipeline: sealing fails, the records stay pending in the
//! writer (up to `log.max_pending_records`, then counted per kind), and once a seal succeeds
//! the writer chains a `disk_full` loss event for whatever it had to count.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use sensor_log::{Event, SealedBatch, Timestamp};
use sensor_store::{Admission, LogWriter, WriterOptions};
use tokio::{runtime::Handle, sync::mpsc};

use super::{
    anchor::{AnchorLink, Note},
    fault,
    output::OutputLink,
    Batch, Counters,
};
use crate::{config::LogConfig, Error};

/// How often the stage wakes when idle, to seal heartbeat batches on time.
const TICK: Duration = Duration::from_millis(100);
/// How often retention runs.
const PRUNE_PERIOD: Duration = Duration::from_secs(60);
/// Least time between two warnings about failing seals.
const WARN_PERIOD: Duration = Duration::from_secs(10);

pub struct ChainStage {
    writer: LogWriter,
    log: LogConfig,
    counters: Arc<Counters>,
    last_prune: Instant,
    last_warning: Option<Instant>,
    anchor: Option<AnchorLink>,
}

impl ChainStage {
    /// Opens the log in `state_dir`, which starts a new epoch linked to the previous one.
    pub fn open(
        state_dir: &std::path::Path,
        log: &LogConfig,
        counters: Arc<Counters>,
    ) -> Result<ChainStage, Error> {
        let options = WriterOptions {
            batch_max_records: log.batch_records,
            batch_interval: log.batch_interval,
            key_rotation: log.key_rotation,
            first_key_rotation: log.first_key_rotation,
            max_pending_records: log.max_pending_records,
            ..WriterOptions::default()
        };
        let writer = LogWriter::open(state_dir, options).map_err(Error::Log)?;
        if let Some(records) = writer.migrated() {
            tracing::info!(
                records,
                "the log store was migrated from layout 2 to layout 3"
            );
        }
        Ok(ChainStage {
            writer,
            log: log.clone(),
            counters,
            last_prune: Instant::now(),
            last_warning: None,
            anchor: None,
        })
    }

    /// The next batch number: where the anchor stage starts.
    pub fn next_batch(&self) -> u64 {
        self.writer.next_batch()
    }

    /// The log's host: the one a forwarding certificate must name.
    pub fn host_id(&self) -> sensor_log::record::HostId {
        self.writer.host_id()
    }

    /// Connects the anchor stage; its first notes are applied before the first seal.
    pub fn attach_anchor(&mut self, link: AnchorLink) {
        self.anchor = Some(link);
    }

    /// Runs until `input` closes, then seals what is pending and marks a clean stop.
    /// Blocking (SQLite), so it runs on its own thread and waits on the channel through
    /// `runtime`. The output holds up the log at most briefly: copies it cannot take are
    /// missed (see [`OutputLink`]), and an output stage that has ended (its reader closed
    /// stdout) only ends the copies; the supervisor reports its end.
    pub fn run(
        mut self,
        runtime: Handle,
        mut input: mpsc::Receiver<Batch<Event>>,
        mut output: Option<OutputLink>,
        sealed: Option<mpsc::Sender<SealedBatch>>,
    ) -> Result<(), Error> {
        loop {
            match runtime.block_on(tokio::time::timeout(TICK, input.recv())) {
                Ok(Some(batch)) => {
                    if fault::fails("chain") {
                        panic!("fault injected into the chain stage (test build)");
                    }
                    // Events are moved into the log; only the output stage needs copies.
                    let copies = output.as_ref().map(|_| batch.clone());
                    self.append(batch);
                    if let (Some(link), Some(copies)) = (&mut output, copies) {
                        if !link.offer(&runtime, copies) {
                            output = None;
                        }
                    }
                }
                Ok(None) => break,
                Err(_idle) => {}
            }
            self.apply_notes();
            let result = self.writer.seal_due(Timestamp::now());
            self.publish(result, &sealed);
            if self.last_prune.elapsed() >= PRUNE_PERIOD {
                self.prune();
            }
        }
        self.apply_notes();
        let result = self.writer.seal(Timestamp::now());
        self.publish(result, &sealed);
        // The stop's counter value and last quote go into the final batch.
        if let Some(link) = &self.anchor {
            if !link.finish() {
                tracing::warn!("the TPM did not answer at stop: no final quote");
            }
        }
        self.apply_notes();
        let last = self.writer.close(Timestamp::now()).map_err(Error::Log)?;
        self.counters.log_closed.store(true, Ordering::Release);
        publish_batches(&self.counters, last, &sealed);
        self.counters.sealed_notify.notify_one();
        Ok(())
    }

    fn apply_notes(&mut self) {
        let Some(link) = &self.anchor else {
            return;
        };
        for note in link.notes() {
            match note {
                Note::Anchor(anchor) => self.writer.set_anchor(anchor),
                Note::Chain(entry) => {
                    if let Err(e) = self.writer.record_tpm(entry, Timestamp::now()) {
                        tracing::error!("chaining a TPM entry failed: {e}");
                    }
                }
            }
        }
    }

    fn append(&mut self, batch: Vec<Event>) {
        let now = Timestamp::now();
        let (mut dropped, mut failed) = (0, 0);
        self.counters.count_events(batch.iter().map(|e| e.kind));
        for event in batch {
            match self.writer.append(event, now.wall_ns, now.mono_ns) {
                Ok(Admission::Chained(_)) => {}
                // Counted by the writer, which chains a `disk_full` loss event later.
                Ok(Admission::Dropped) => dropped += 1,
                Err(e) => {
                    failed += 1;
                    tracing::error!("chaining an event failed: {e}");
                }
            }
        }
        if dropped > 0 {
            self.counters.count_loss("disk_full", dropped);
        }
        if failed > 0 {
            // Reported by the loss stage as `agent_chain` losses.
            self.counters
                .chain_errors
                .fetch_add(failed, Ordering::Relaxed);
        }
    }

    /// Hands sealed (durable) batches on; a failed seal keeps its records pending.
    fn publish(
        &mut self,
        result: sensor_store::Result<Vec<SealedBatch>>,
        sealed: &Option<mpsc::Sender<SealedBatch>>,
    ) {
        match result {
            Ok(batches) => publish_batches(&self.counters, batches, sealed),
            Err(e) => {
                if self.last_warning.is_none_or(|t| t.elapsed() >= WARN_PERIOD) {
                    self.last_warning = Some(Instant::now());
                    tracing::warn!(
                        pending = self.writer.pending_records(),
                        "sealing a batch failed, events stay pending and are retried: {e}"
                    );
                }
            }
        }
    }

    fn prune(&mut self) {
        self.last_prune = Instant::now();
        // With forwarding on, nothing a collector has not acknowledged ages out.
        let keep_from = self
            .counters
            .forward
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|f| f.last_acked.unwrap_or(0) + 1);
        match self.writer.prune(
            self.log.retention_max_bytes,
            self.log.retention_max_age,
            keep_from,
            Timestamp::now(),
        ) {
            Ok(Some(pruned)) => tracing::info!(?pruned, "retention pruned the oldest batches"),
            Ok(None) => {}
            Err(e) => tracing::warn!("retention failed: {e}"),
        }
        if let Err(e) = self.writer.give_back_free_pages() {
            tracing::warn!("retention could not give free pages back to the file system: {e}");
        }
    }
}

/// Hands durable batches to the anchor stage. A full queue skips anchoring a batch, which the
/// anchor stage records as a gap: the chain never waits for the TPM.
fn publish_batches(
    counters: &Counters,
    batches: Vec<SealedBatch>,
    sealed: &Option<mpsc::Sender<SealedBatch>>,
) {
    for batch in batches {
        counters.sealed(&batch);
        if let Some(sealed) = sealed {
            let _ = sealed.try_send(batch);
        }
    }
}
