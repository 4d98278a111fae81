//! Anchor stage: anchors the log in the TPM (docs/tpm.md). Every sealed batch, already
//! durable, is extended into the anchor PCR; on a schedule the stage advances the NV counter
//! and quotes the PCR. What it did goes back to the chain stage as notes: entries to chain
//! (replay base, quotes, gaps, alarms) and the anchor to put in later batch headers.
//!
//! It never blocks the chain stage: sealed batches arrive through a bounded queue that the
//! chain stage fills with `try_send`, so a slow or hung TPM costs batches skipped for
//! anchoring (a recorded gap), never events. All TPM commands go through one `TpmWorker`.

use std::{
    sync::{mpsc as std_mpsc, Arc},
    time::{Duration, Instant},
};

use sensor_log::{Anchor, AnchorBase, AnchorStatus, EndReason, SealedBatch, TpmEntry, TpmQuote};
use sensor_tpm::{
    allowed_counter_lead, counter_outcome, quote_binding, ClockInfo, Outcome, TpmConfig, TpmInfo,
    TpmWorker,
};
use tokio::{runtime::Handle, sync::mpsc};

use super::Counters;

/// Sealed batches waiting for the anchor stage; beyond it the chain stage skips anchoring
/// them (a gap) instead of waiting.
pub const QUEUE_BATCHES: usize = 64;
/// How often the stage wakes for its schedule when no batch arrives.
const TICK: Duration = Duration::from_millis(100);
/// Least time between two attempts to reach a failing TPM.
const RETRY: Duration = Duration::from_secs(1);

/// What the anchor stage tells the chain stage.
#[derive(Debug)]
pub enum Note {
    /// Chain this entry.
    Chain(TpmEntry),
    /// Put this anchor in the headers sealed from now on.
    Anchor(Option<Anchor>),
}

/// The chain stage's end of the anchor stage.
pub struct AnchorLink {
    notes: std_mpsc::Receiver<Note>,
    finish: std_mpsc::SyncSender<std_mpsc::SyncSender<()>>,
    finish_timeout: Duration,
}

impl AnchorLink {
    /// Notes sent since the last call; never waits.
    pub fn notes(&self) -> impl Iterator<Item = Note> + '_ {
        self.notes.try_iter()
    }

    /// At clean stop: asks for the stop's counter advance and a last quote, after the
    /// batches already queued. Waits a bounded time (a hung TPM must not hold up the stop);
    /// false when the stage did not answer in time.
    pub fn finish(&self) -> bool {
        let (tx, rx) = std_mpsc::sync_channel(1);
        self.finish.try_send(tx).is_ok() && rx.recv_timeout(self.finish_timeout).is_ok()
    }
}

enum State {
    /// No TPM, or switched off: nothing to do, and the log says so.
    Off,
    /// Batch `next` is the next to extend.
    Anchoring { next: u64 },
    /// Batches from `from` on are sealed without a known extend.
    Failing { from: u64, last_try: Instant },
}

pub struct AnchorStage {
    worker: Option<TpmWorker>,
    config: TpmConfig,
    state: State,
    info: Option<TpmInfo>,
    /// Newest extended batch: number and digest, what a quote binds.
    last_extended: Option<(u64, [u8; 32])>,
    anchor: Option<Anchor>,
    last_quote: Instant,
    last_advance: Instant,
    notes: std_mpsc::Sender<Note>,
    finish: std_mpsc::Receiver<std_mpsc::SyncSender<()>>,
    counters: Arc<Counters>,
}

impl AnchorStage {
    /// Connects to the TPM and sets up this epoch's anchoring before the chain stage seals
    /// anything: checks the log against the TPM (a restored older state directory shows as
    /// a counter ahead of the log), advances the counter, and reads the PCR as the replay
    /// base of batch `next_batch` on. `previous` is how the previous epoch ended and its last
    /// batch's anchor. Never fails: without a TPM the log records that it is not anchored.
    pub fn start(
        config: Option<TpmConfig>,
        previous: (EndReason, Option<Anchor>),
        next_batch: u64,
        counters: Arc<Counters>,
    ) -> (AnchorStage, AnchorLink) {
        let (notes_tx, notes_rx) = std_mpsc::channel();
        let (finish_tx, finish_rx) = std_mpsc::sync_channel(1);
        let op_timeout = config.as_ref().map_or(Duration::ZERO, |c| c.op_timeout);
        let worker = match &config {
            None => Err("switched off in the configuration (tpm.tcti = \"off\")".to_string()),
            Some(c) => TpmWorker::start(c.clone()).map_err(|e| e.to_string()),
        };
        let now = Instant::now();
        let mut stage = AnchorStage {
            config: config.unwrap_or_default(),
            worker: None,
            state: State::Off,
            info: None,
            last_extended: None,
            anchor: None,
            last_quote: now,
            last_advance: now,
            notes: notes_tx,
            finish: finish_rx,
            counters,
        };
        match worker {
            Err(reason) => {
                tracing::warn!("the log is NOT anchored in a TPM: {reason}");
                stage.note(Note::Chain(TpmEntry::Unanchored {
                    reason: reason.clone(),
                }));
                stage.publish_status("not anchored", reason);
            }
            Ok(worker) => {
                stage.worker = Some(worker);
                if let Err(e) = stage.begin(previous, next_batch) {
                    stage.fail(next_batch, &e);
                }
            }
        }
        // The stop's advance and quote after the queued batches, each call bounded by
        // `op_timeout`; a few ticks for the stage to notice the request.
        let link = AnchorLink {
            notes: notes_rx,
            finish: finish_tx,
            finish_timeout: op_timeout * 4 + TICK * 5,
        };
        (stage, link)
    }

    /// Extends sealed batches as they come and runs the schedule, until the chain stage drops
    /// its sender (after the last batch of a clean stop).
    pub fn run(mut self, runtime: Handle, mut sealed: mpsc::Receiver<SealedBatch>) {
        loop {
            match runtime.block_on(tokio::time::timeout(TICK, sealed.recv())) {
                Ok(Some(batch)) => self.batch(&batch),
                Ok(None) => break,
                Err(_idle) => {}
            }
            if let Ok(reply) = self.finish.try_recv() {
                while let Ok(batch) = sealed.try_recv() {
                    self.batch(&batch);
                }
                self.stop();
                let _ = reply.try_send(());
            }
            self.schedule();
        }
    }

    fn begin(
        &mut self,
        (reason, previous): (EndReason, Option<Anchor>),
        next_batch: u64,
    ) -> Result<(), sensor_tpm::Error> {
        let (mut base, clock) = self.read_base(next_batch)?;
        if let Some(alarm) = previous.and_then(|p| self.check(reason, &p, &clock, base.nv_counter))
        {
            tracing::error!(
                "{}: {}; the state directory does not match the TPM (an older copy?)",
                alarm.reason(),
                alarm.detail()
            );
            self.note(Note::Chain(TpmEntry::Alarm {
                reason: alarm.reason().to_string(),
                detail: alarm.detail(),
            }));
        }
        base.nv_counter = self.advance()?;
        self.last_advance = Instant::now();
        tracing::info!(
            tcti = self.worker.as_ref().map(TpmWorker::tcti),
            pcr = base.pcr_index,
            nv_counter = base.nv_counter,
            reset_count = base.reset_count,
            "the log is anchored in the TPM"
        );
        self.anchored(base, None);
        Ok(())
    }

    /// The TPM against the previous epoch's last batch: counts going backwards mean another
    /// or a cleared TPM, a counter further ahead than the schedule allows means the state
    /// directory is older than the TPM.
    fn check(
        &self,
        reason: EndReason,
        previous: &Anchor,
        clock: &ClockInfo,
        counter: u64,
    ) -> Option<Outcome> {
        let now = (clock.reset_count, clock.restart_count);
        let then = (previous.reset_count, previous.restart_count);
        if now < then {
            return Some(Outcome::TpmStateMismatch(format!(
                "TPM reset/restart counts {now:?} are below the {then:?} the log recorded: another TPM, or a cleared one"
            )));
        }
        let orderly = self.info.as_ref().is_some_and(|i| i.counter_orderly);
        let lead = allowed_counter_lead(reason == EndReason::CleanStop, now != then, orderly);
        counter_outcome(counter, previous.nv_counter, lead)
    }

    /// Reads what a replay base records, the PCR last (nothing extends it in between: every
    /// command goes through this stage).
    fn read_base(
        &mut self,
        replay_from: u64,
    ) -> Result<(AnchorBase, ClockInfo), sensor_tpm::Error> {
        let info = self.call(0, TpmWorker::connect)?;
        let clock = self.call(2, TpmWorker::clock_info)?;
        let nv_counter = self.call(1, TpmWorker::read_counter)?;
        let pcr_value = self.call(1, TpmWorker::pcr_read)?;
        let base = AnchorBase {
            replay_from,
            pcr_index: info.pcr,
            pcr_value,
            reset_count: clock.reset_count,
            restart_count: clock.restart_count,
            nv_counter,
            nv_index: info.nv_index,
            ak_handle: info.ak_handle,
            ak_public: info.ak_public.public_area.clone(),
        };
        self.info = Some(info);
        Ok((base, clock))
    }

    /// Anchoring (re)starts at `base.replay_from`; `gap` is the span it resumes after.
    fn anchored(&mut self, base: AnchorBase, gap: Option<(u64, u64)>) {
        self.anchor = Some(Anchor {
            pcr_index: base.pcr_index,
            nv_counter: base.nv_counter,
            reset_count: base.reset_count,
            restart_count: base.restart_count,
        });
        self.state = State::Anchoring {
            next: base.replay_from,
        };
        self.note(Note::Anchor(self.anchor));
        self.note(Note::Chain(match gap {
            None => TpmEntry::Anchored(base),
            Some((gap_from, gap_to)) => TpmEntry::Resumed {
                gap_from,
                gap_to,
                base,
            },
        }));
        let tcti = self.worker.as_ref().map(|w| w.tcti().to_string());
        self.publish_status("anchored", tcti.unwrap_or_default());
    }

    fn batch(&mut self, batch: &SealedBatch) {
        let number = batch.header.number;
        match self.state {
            State::Off => {}
            State::Anchoring { next } if next == number => {
                match self.call(1, |w| w.extend(batch.digest)) {
                    Ok(()) => {
                        self.state = State::Anchoring { next: number + 1 };
                        self.last_extended = Some((number, batch.digest));
                        self.status(|s| s.last_extended_batch = Some(number));
                    }
                    Err(e) => self.fail(number, &e),
                }
            }
            State::Anchoring { next } => {
                // The chain stage skipped batches (queue full): the PCR cannot be replayed
                // across them, so it is a gap like a TPM failure, and resumes at once.
                let why = format!(
                    "batches {next}..{} skipped: the anchor queue was full",
                    number - 1
                );
                self.fail_with(next, why);
                self.resume(batch);
            }
            State::Failing { last_try, .. } if last_try.elapsed() >= RETRY => self.resume(batch),
            State::Failing { .. } => {}
        }
    }

    /// Tries to re-base on the PCR as it is now and extend `batch` from there.
    fn resume(&mut self, batch: &SealedBatch) {
        let State::Failing { from, .. } = self.state else {
            return;
        };
        let number = batch.header.number;
        let attempt = self.read_base(number).and_then(|(base, _)| {
            self.call(1, |w| w.extend(batch.digest))?;
            Ok(base)
        });
        match attempt {
            Ok(base) => {
                tracing::info!(
                    gap_from = from,
                    gap_to = number - 1,
                    "TPM anchoring resumed"
                );
                self.anchored(base, Some((from, number - 1)));
                self.state = State::Anchoring { next: number + 1 };
                self.last_extended = Some((number, batch.digest));
                self.status(|s| {
                    s.last_extended_batch = Some(number);
                    s.gaps += 1;
                });
            }
            Err(_) => {
                self.state = State::Failing {
                    from,
                    last_try: Instant::now(),
                }
            }
        }
    }

    fn fail(&mut self, from: u64, error: &sensor_tpm::Error) {
        self.fail_with(from, error.to_string());
    }

    /// Anchoring stops at batch `from`; the log says so at once, not only when it resumes.
    fn fail_with(&mut self, from: u64, error: String) {
        tracing::error!(
            from_batch = from,
            "TPM anchoring failed, events are still logged: {error}"
        );
        self.note(Note::Chain(TpmEntry::Failing {
            from_batch: from,
            error: error.clone(),
        }));
        self.state = State::Failing {
            from,
            last_try: Instant::now(),
        };
        self.publish_status("failing", error);
    }

    /// Quotes every `quote_period`, advances the counter every `nv_interval`.
    fn schedule(&mut self) {
        let State::Anchoring { next } = self.state else {
            return;
        };
        if self.last_advance.elapsed() >= self.config.nv_interval {
            self.last_advance = Instant::now();
            if let Err(e) = self.advance() {
                return self.fail(next, &e);
            }
        }
        if self.last_quote.elapsed() >= self.config.quote_period {
            self.last_quote = Instant::now();
            if let Err(e) = self.quote() {
                self.fail(next, &e);
            }
        }
    }

    /// The clean stop's advance (recorded in the last batch, so a clean stop leaves the
    /// counter exactly where the log says) and a last quote.
    fn stop(&mut self) {
        let State::Anchoring { next } = self.state else {
            return;
        };
        if let Err(e) = self.advance().and_then(|_| self.quote()) {
            self.fail(next, &e);
        }
    }

    fn advance(&mut self) -> Result<u64, sensor_tpm::Error> {
        let value = self.call(2, TpmWorker::advance_counter)?;
        if let Some(anchor) = &mut self.anchor {
            anchor.nv_counter = value;
            self.note(Note::Anchor(self.anchor));
        }
        self.status(|s| s.nv_counter = Some(value));
        Ok(value)
    }

    /// A self-quote binding the newest extended batch, chained into the log.
    fn quote(&mut self) -> Result<(), sensor_tpm::Error> {
        let Some((batch, digest)) = self.last_extended else {
            return Ok(());
        };
        let quote = self.call(2, |w| w.quote(quote_binding(batch, &digest, &[0; 32])))?;
        self.note(Note::Chain(TpmEntry::Quote(TpmQuote {
            batch,
            attest: quote.attest,
            signature: quote.signature.to_vec(),
        })));
        self.status(|s| s.last_quoted_batch = Some(batch));
        Ok(())
    }

    /// One worker call, counted as `commands` TPM commands for the status.
    fn call<T>(
        &mut self,
        commands: u64,
        f: impl FnOnce(&TpmWorker) -> Result<T, sensor_tpm::Error>,
    ) -> Result<T, sensor_tpm::Error> {
        let Some(worker) = &self.worker else {
            return Err(sensor_tpm::Error::NoTpm("no TPM worker".into()));
        };
        let result = f(worker);
        self.status(|s| s.tpm_commands += commands);
        result
    }

    fn note(&self, note: Note) {
        // The chain stage has ended only at shutdown, when nothing more can be chained.
        let _ = self.notes.send(note);
    }

    fn publish_status(&self, state: &str, detail: String) {
        let pcr = self.worker.as_ref().map(|_| self.config.pcr);
        self.status(|s| {
            s.state = state.to_string();
            s.detail = detail;
            s.pcr = pcr;
        });
    }

    fn status(&self, f: impl FnOnce(&mut AnchorStatus)) {
        f(&mut self
            .counters
            .anchor
            .lock()
            .unwrap_or_else(|p| p.into_inner()));
    }
}
