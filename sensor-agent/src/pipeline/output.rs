//! Output stage: one JSON object per line on stdout (`--output json`), or nothing.
//!
//! The output is a copy for whoever reads stdout; the log waits for it only briefly. The
//! chain stage offers each batch through an [`OutputLink`]: a reader that falls behind for a
//! moment holds the chain up to [`PATIENCE`], as a bounded queue would; one that is slower
//! than that (or stopped) misses copies until it has drained half its queue, so it never sets
//! the log's pace. Missed copies are counted (`output_missed` in `status.json`) and
//! announced in the stream by a `loss` event of source `output` ahead of the next batch the
//! output takes. That event exists on stdout only; the missed events are in the log.

use std::{
    collections::BTreeMap,
    io::{BufWriter, Write},
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use sensor_log::{Event, Timestamp};
use tokio::{
    runtime::Handle,
    sync::mpsc::{
        self,
        error::{SendTimeoutError, TrySendError},
    },
};

use super::{Batch, Counters};
use crate::Error;

/// The `loss` source of the stdout-only event that announces missed copies.
const MISSED_SOURCE: &str = "output";
/// How long the log may wait for room in the output's queue.
pub const PATIENCE: Duration = Duration::from_secs(2);
/// Least time between two warnings about missed copies.
const WARN_PERIOD: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One JSON object per line on stdout.
    Json,
    /// No event output (the log and `sensorctl` are the way to read events).
    None,
}

impl OutputFormat {
    /// As `--output` spells it.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Json => "json",
            OutputFormat::None => "none",
        }
    }
}

pub struct OutputStage {
    format: OutputFormat,
}

impl OutputStage {
    pub fn new(format: OutputFormat) -> Self {
        OutputStage { format }
    }

    /// Writes until `input` closes; blocking, so it runs on its own thread. Output is
    /// flushed whenever the queue runs dry, so a reader sees each event promptly without a
    /// write per event under load.
    pub fn run(self, mut input: mpsc::Receiver<Batch<Event>>) -> Result<(), Error> {
        let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout());
        while let Some(batch) = input.blocking_recv() {
            if self.format == OutputFormat::Json {
                for event in &batch {
                    serde_json::to_writer(&mut out, event).map_err(|e| Error::Output(e.into()))?;
                    out.write_all(b"\n").map_err(Error::Output)?;
                }
                if input.is_empty() {
                    out.flush().map_err(Error::Output)?;
                }
            }
        }
        out.flush().map_err(Error::Output)
    }
}

/// The chain stage's side of the output: offers copies, waits at most [`PATIENCE`].
pub struct OutputLink {
    tx: mpsc::Sender<Batch<Event>>,
    /// Copies missed since the output last took a batch, by kind.
    missed: BTreeMap<String, u64>,
    counters: Arc<Counters>,
    last_warning: Option<Instant>,
}

impl OutputLink {
    pub fn new(tx: mpsc::Sender<Batch<Event>>, counters: Arc<Counters>) -> OutputLink {
        OutputLink {
            tx,
            missed: BTreeMap::new(),
            counters,
            last_warning: None,
        }
    }

    /// Queues `batch` for stdout (see the module doc for when it is missed instead); false
    /// once the output stage has ended. `runtime` runs the bounded wait.
    pub fn offer(&mut self, runtime: &Handle, mut batch: Batch<Event>) -> bool {
        if self.missed.is_empty() {
            return match runtime.block_on(self.tx.send_timeout(batch, PATIENCE)) {
                Ok(()) => true,
                Err(SendTimeoutError::Timeout(batch)) => {
                    self.miss(&batch);
                    true
                }
                Err(SendTimeoutError::Closed(_)) => false,
            };
        }
        if self.tx.is_closed() {
            return false;
        }
        // The chain stage is the only sender: the room seen here is there for the send below.
        if self.tx.capacity() < self.tx.max_capacity() / 2 {
            self.miss(&batch);
            return true;
        }
        let missed = Event::loss(MISSED_SOURCE, self.missed.clone(), Timestamp::now().wall_ns);
        batch.insert(0, missed);
        match self.tx.try_send(batch) {
            Ok(()) => {
                self.missed.clear();
                true
            }
            Err(TrySendError::Full(batch)) => {
                self.miss(&batch[1..]);
                true
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    fn miss(&mut self, batch: &[Event]) {
        for event in batch {
            *self
                .missed
                .entry(event.kind.as_str().to_owned())
                .or_default() += 1;
        }
        let total = self
            .counters
            .output_missed
            .fetch_add(batch.len() as u64, Ordering::Relaxed)
            + batch.len() as u64;
        if self.last_warning.is_none_or(|t| t.elapsed() >= WARN_PERIOD) {
            self.last_warning = Some(Instant::now());
            tracing::warn!(
                total,
                "the reader of stdout is too slow: events are not written to the output \
                 (they are in the log)"
            );
        }
    }
}
