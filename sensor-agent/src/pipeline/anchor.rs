//! Anchor stage: anchors the log in the TPM (docs/tpm.md). It keeps one rule, which the
//! verifier relies on: in each TPM boot cycle, every batch whose header names that cycle is
//! extended into the anchor PCR, once, in batch order, from the PCR value of the cycle's first
//! replay base. Batches it did not receive (queue full) or could not extend (TPM failing) are
//! extended later from the store, so the rule holds through every delay.
//!
//! At start (and whenever the TPM first answers, if it did not at start) it checks the log
//! against the TPM before it chains a replay base: within the boot cycle the PCR must be the
//! replay of the log's batches (a restored copy or a cut tail leaves extends the log lacks),
//! the NV counter must be where the log says, the attestation key must be the one the log
//! pinned, and a TPM that shows an earlier log must not meet an empty one. A disagreement is
//! chained as a `tpm_alarm` and logged at ERROR; the agent keeps logging.
//!
//! The NV counter is recorded before it is advanced: the stage announces the next value, the
//! chain stage puts it in the headers it seals, and only once such a header is extended does
//! the stage advance the TPM to it. So the TPM is never ahead of the durable log, whatever
//! the agent's end, and a TPM ahead of the log always means lost history.
//!
//! It never blocks the chain stage: sealed batches arrive through a bounded queue that the
//! chain stage fills with `try_send`. All TPM commands go through one `TpmWorker`.

use std::{
    path::PathBuf,
    sync::{mpsc as std_mpsc, Arc},
    time::{Duration, Instant},
};

use sensor_log::{
    anchor::{cycle_of, Cycle},
    Anchor, AnchorBase, AnchorTrail, BatchHeader, SealedBatch, TpmEntry, TpmQuote,
};
use sensor_store::{AnchorStatus, Store};
use sensor_tpm::{
    classify, counter_outcome, extend_pcr, quote_binding, ClockInfo, LogAnchorState, Outcome,
    TpmConfig, TpmInfo, TpmState, TpmWorker,
};
use tokio::{runtime::Handle, sync::mpsc};

use super::Counters;

/// Sealed batches waiting for the anchor stage; beyond it the chain stage drops them from the
/// queue and the stage reads them from the store when it catches up.
pub const QUEUE_BATCHES: usize = 64;
/// How often the stage wakes for its schedule when no batch arrives.
const TICK: Duration = Duration::from_millis(100);
/// Least time between two attempts to reach a TPM that failed or has not answered yet.
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

    /// At clean stop: asks for the stop's counter announcement and a last quote, after the
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
    /// The TPM has not answered yet: the start check runs once it does.
    Starting { last_try: Instant, failed: bool },
    /// Every batch of `cycle` before `next` is extended and the PCR reads `pcr`.
    Anchoring,
    /// Extending batch `from` failed; retried, then caught up from the store.
    Failing { from: u64, last_try: Instant },
}

pub struct AnchorStage {
    worker: Option<TpmWorker>,
    config: TpmConfig,
    state: State,
    state_dir: PathBuf,
    /// Read-only view of the log, for the start check and for catching up.
    store: Option<Store>,
    info: Option<TpmInfo>,
    /// The anchor headers carry from now on.
    anchor: Option<Anchor>,
    /// What the PCR must read: the replay of every batch of the cycle extended so far.
    pcr: [u8; 32],
    /// The next batch number to consider for extending.
    next: u64,
    /// The newest batch number the chain stage sealed, as far as the stage knows.
    last_seen: u64,
    /// A counter value the headers carry that the TPM has not reached yet.
    announced: Option<u64>,
    /// Newest extended batch: number and digest, what a quote binds.
    last_extended: Option<(u64, [u8; 32])>,
    last_quote: Instant,
    last_advance: Instant,
    notes: std_mpsc::Sender<Note>,
    finish: std_mpsc::Receiver<std_mpsc::SyncSender<()>>,
    counters: Arc<Counters>,
}

impl AnchorStage {
    /// Sets the stage up; `next_batch` is the first batch sealed after this epoch's start.
    /// Never fails: without a TPM the log records that it is not anchored, and a TPM that
    /// does not answer yet is tried again (with the full start check) until it does.
    pub fn start(
        config: Option<TpmConfig>,
        state_dir: PathBuf,
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
            state_dir,
            store: None,
            info: None,
            anchor: None,
            pcr: [0; 32],
            next: next_batch,
            last_seen: next_batch.saturating_sub(1),
            announced: None,
            last_extended: None,
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
                stage.state = State::Starting {
                    last_try: now.checked_sub(RETRY).unwrap_or(now),
                    failed: false,
                };
                stage.publish_status("starting", "connecting to the TPM".into());
            }
        }
        // The stop's announcement and quote after the queued batches, each call bounded by
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
        self.schedule();
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

    /// The start check, then this epoch's replay base (docs/tpm.md, "Start").
    fn begin(&mut self) -> Result<(), String> {
        let text = |e: sensor_tpm::Error| e.to_string();
        let info = self.call(0, TpmWorker::connect).map_err(text)?;
        let clock = self.call(2, TpmWorker::clock_info).map_err(text)?;
        let counter = self.call(1, TpmWorker::read_counter).map_err(text)?;
        let live = self.call(1, TpmWorker::pcr_read).map_err(text)?;
        let trail = self
            .store()
            .and_then(|s| s.newest_anchor_trail().map_err(|e| e.to_string()))
            .map_err(|e| format!("reading the log for the start check: {e}"))?;
        self.info = Some(info.clone());
        let cycle = (clock.reset_count, clock.restart_count);
        let found = check(&info, &trail, &clock, counter, live);
        for (reason, detail) in found.alarms {
            self.alarm(reason, detail);
        }
        // Batches of this cycle the previous epoch sealed but did not extend (it died first).
        let mut pcr = live;
        for (number, digest) in found.catch_up {
            self.call(1, |w| w.extend(digest)).map_err(text)?;
            pcr = extend_pcr(&pcr, &digest);
            self.last_extended = Some((number, digest));
        }
        // An advance the previous epoch recorded but did not reach (it died in between).
        let recorded = trail.last_anchor.map(|(_, a)| a.nv_counter);
        let mut counter = counter;
        if recorded == Some(counter + 1) {
            counter = self.call(2, TpmWorker::advance_counter).map_err(text)?;
        }
        self.announced = Some(counter + 1);
        let base = self.base(&info, cycle, self.last_seen + 1, pcr, counter + 1);
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

    /// A replay base: batch `replay_from` on are extended from `pcr`, and their headers carry
    /// `counter`.
    fn base(
        &mut self,
        info: &TpmInfo,
        cycle: Cycle,
        replay_from: u64,
        pcr: [u8; 32],
        counter: u64,
    ) -> AnchorBase {
        self.last_advance = Instant::now();
        AnchorBase {
            replay_from,
            pcr_index: info.pcr,
            pcr_value: pcr,
            reset_count: cycle.0,
            restart_count: cycle.1,
            nv_counter: counter,
            nv_index: info.nv_index,
            ak_handle: info.ak_handle,
            ak_public: info.ak_public.public_area.clone(),
        }
    }

    /// Anchoring (re)starts at `base.replay_from`; `gap` is the span it resumes after.
    fn anchored(&mut self, base: AnchorBase, gap: Option<(u64, u64)>) {
        self.anchor = Some(Anchor {
            pcr_index: base.pcr_index,
            nv_counter: base.nv_counter,
            reset_count: base.reset_count,
            restart_count: base.restart_count,
        });
        self.pcr = base.pcr_value;
        self.next = base.replay_from;
        self.state = State::Anchoring;
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
        self.last_seen = self.last_seen.max(batch.header.number);
        match self.state {
            State::Anchoring => {
                if let Err(from) = self.catch_up(Some(batch)) {
                    self.fail(from);
                }
            }
            State::Failing { last_try, .. } if last_try.elapsed() >= RETRY => self.resume(),
            State::Off | State::Starting { .. } | State::Failing { .. } => {}
        }
    }

    /// Extends every batch of the cycle from `next` up to the newest sealed one, in order:
    /// `batch` as handed over, the ones the queue dropped from the store. On failure, the
    /// batch whose extend failed (it may or may not be in the PCR) and the error.
    fn catch_up(&mut self, batch: Option<&SealedBatch>) -> Result<(), (u64, String)> {
        let upto = self.last_seen;
        while self.next <= upto {
            let number = self.next;
            let (header, digest) = match batch.filter(|b| b.header.number == number) {
                Some(b) => (b.header.clone(), b.digest),
                None => self.stored(number).map_err(|e| (number, e))?,
            };
            self.next = number + 1;
            if header.anchor.as_ref().map(cycle_of) == self.cycle() {
                self.extend(number, &header, digest)?;
            }
        }
        Ok(())
    }

    /// One extend, then the PCR read back: anything but the replay means someone else
    /// extended it, or the TPM restarted (a new cycle).
    fn extend(
        &mut self,
        number: u64,
        header: &BatchHeader,
        digest: [u8; 32],
    ) -> Result<(), (u64, String)> {
        let fail = |e: sensor_tpm::Error| (number, e.to_string());
        let expected = extend_pcr(&self.pcr, &digest);
        self.call(1, |w| w.extend(digest)).map_err(fail)?;
        // Until the read back succeeds, `self.pcr` stays before this extend: a failure here
        // leaves it to `resume` to tell whether the extend reached the PCR.
        let live = self.call(1, TpmWorker::pcr_read).map_err(fail)?;
        self.pcr = expected;
        self.last_extended = Some((number, digest));
        self.status(|s| s.last_extended_batch = Some(number));
        if live != expected {
            let clock = self.call(2, TpmWorker::clock_info).map_err(fail)?;
            self.unexpected_pcr((number, number), live, &clock);
            return Ok(());
        }
        if let (Some(target), Some(anchor)) = (self.announced, header.anchor) {
            if anchor.nv_counter >= target {
                self.reach(target).map_err(fail)?;
            }
        }
        Ok(())
    }

    /// The PCR is not what this stage extended it to. A new reset or restart count is a TPM
    /// that restarted under the agent (its PCR started over): a new cycle, no alarm. The same
    /// counts mean someone else extended the PCR: an alarm, and a base on the value as it is.
    /// `gap`: the batches whose extend this leaves unsettled.
    fn unexpected_pcr(&mut self, gap: (u64, u64), live: [u8; 32], clock: &ClockInfo) {
        let cycle = (clock.reset_count, clock.restart_count);
        if Some(cycle) == self.cycle() {
            self.alarm(
                "PCR extended by another party",
                format!(
                    "after batch {} PCR {} reads {}, the log's replay gives {}",
                    gap.1,
                    self.config.pcr,
                    sensor_log::hex::encode(live),
                    sensor_log::hex::encode(self.pcr)
                ),
            );
        } else {
            tracing::warn!(
                reset_count = clock.reset_count,
                restart_count = clock.restart_count,
                "the TPM restarted under the agent: a new boot cycle"
            );
        }
        let Some(info) = self.info.clone() else {
            return;
        };
        let counter = self.anchor.map_or(0, |a| a.nv_counter);
        let base = self.base(&info, cycle, self.next, live, counter);
        self.anchored(base, Some(gap));
    }

    /// Advances the TPM's counter to `target`, the value the headers already carry.
    fn reach(&mut self, target: u64) -> Result<(), sensor_tpm::Error> {
        let mut value = self.call(1, TpmWorker::read_counter)?;
        while value < target {
            value = self.call(2, TpmWorker::advance_counter)?;
        }
        if value > target {
            self.alarm(
                "TPM state mismatch",
                format!("the NV counter reads {value}, the log recorded {target}: advanced by another party"),
            );
            if let Some(anchor) = &mut self.anchor {
                anchor.nv_counter = value;
                self.note(Note::Anchor(self.anchor));
            }
        }
        self.announced = None;
        self.status(|s| s.nv_counter = Some(value));
        Ok(())
    }

    /// The header and digest of a sealed batch, from the store.
    fn stored(&mut self, number: u64) -> Result<(BatchHeader, [u8; 32]), String> {
        let batch = self
            .store()?
            .batch(number)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("batch {number} is not in the store"))?;
        Ok((batch.header, sensor_log::batch::digest(&batch.header_bytes)))
    }

    fn store(&mut self) -> Result<&Store, String> {
        if self.store.is_none() {
            self.store = Some(Store::open_read_only(&self.state_dir).map_err(|e| e.to_string())?);
        }
        self.store.as_ref().ok_or_else(|| "no store".to_string())
    }

    fn cycle(&self) -> Option<Cycle> {
        self.anchor.as_ref().map(cycle_of)
    }

    /// Reaches the TPM again after a failure: the failed extend either reached the PCR or
    /// not; then the batches sealed meanwhile are extended from the store. A TPM that
    /// restarted meanwhile begins a new cycle (the batches of the old one stay unanchored).
    fn resume(&mut self) {
        let State::Failing { from, .. } = self.state else {
            return;
        };
        let attempt = (|| {
            let clock = self.call(2, TpmWorker::clock_info)?;
            let live = self.call(1, TpmWorker::pcr_read)?;
            Ok::<_, sensor_tpm::Error>((clock, live))
        })();
        let Ok((clock, live)) = attempt else {
            self.state = State::Failing {
                from,
                last_try: Instant::now(),
            };
            return;
        };
        let gap = (from, self.last_seen);
        tracing::info!(gap_from = gap.0, gap_to = gap.1, "TPM anchoring resumed");
        self.status(|s| s.gaps += 1);
        if Some((clock.reset_count, clock.restart_count)) != self.cycle() {
            self.unexpected_pcr(gap, live, &clock);
            return;
        }
        // Nothing else ran in between: the failed extend of `from` reached the PCR or not.
        match self.stored(from) {
            Ok((_, digest)) if live == extend_pcr(&self.pcr, &digest) => {
                self.pcr = live;
                self.next = from + 1;
            }
            _ if live == self.pcr => self.next = from,
            _ => {
                self.state = State::Anchoring;
                return self.unexpected_pcr(gap, live, &clock);
            }
        }
        self.state = State::Anchoring;
        if let Err(e) = self.catch_up(None) {
            return self.fail(e);
        }
        let (Some(info), Some(anchor)) = (self.info.clone(), self.anchor) else {
            return;
        };
        let base = self.base(
            &info,
            cycle_of(&anchor),
            self.next,
            self.pcr,
            anchor.nv_counter,
        );
        self.anchored(base, Some(gap));
    }

    /// Anchoring stops at batch `from`; the log says so at once, not only when it resumes.
    fn fail(&mut self, (from, error): (u64, String)) {
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

    /// A disagreement between the log and the TPM: chained, and an ERROR line.
    fn alarm(&mut self, reason: &str, detail: String) {
        tracing::error!("{reason}: {detail}");
        self.note(Note::Chain(TpmEntry::Alarm {
            reason: reason.to_string(),
            detail,
        }));
    }

    /// Starts anchoring when the TPM answers; quotes every `quote_period`, announces the next
    /// counter value every `nv_interval`; retries a failing TPM.
    fn schedule(&mut self) {
        match self.state {
            State::Off => {}
            State::Starting { last_try, failed } => {
                if last_try.elapsed() < RETRY {
                    return;
                }
                if let Err(e) = self.begin() {
                    if !failed {
                        // Said once in the log; the status says it as long as it lasts.
                        tracing::error!("the TPM does not answer, anchoring waits for it: {e}");
                        self.note(Note::Chain(TpmEntry::Failing {
                            from_batch: self.last_seen + 1,
                            error: e.clone(),
                        }));
                    }
                    self.publish_status("failing", e);
                    self.state = State::Starting {
                        last_try: Instant::now(),
                        failed: true,
                    };
                }
            }
            State::Failing { last_try, .. } => {
                if last_try.elapsed() >= RETRY {
                    self.resume();
                }
            }
            State::Anchoring => {
                if self.announced.is_none()
                    && self.last_advance.elapsed() >= self.config.nv_interval
                {
                    self.announce();
                }
                if self.last_quote.elapsed() >= self.config.quote_period {
                    self.last_quote = Instant::now();
                    if let Err(e) = self.quote() {
                        self.fail((self.next, e.to_string()));
                    }
                }
            }
        }
    }

    /// The next counter value goes into the headers; the TPM follows once one is extended.
    fn announce(&mut self) {
        self.last_advance = Instant::now();
        if let Some(anchor) = &mut self.anchor {
            anchor.nv_counter += 1;
            self.announced = Some(anchor.nv_counter);
            self.note(Note::Anchor(self.anchor));
        }
    }

    /// At clean stop: the stop's counter value goes into the final batch (extended, and the
    /// counter advanced to it, when that batch arrives), and a last quote.
    fn stop(&mut self) {
        if !matches!(self.state, State::Anchoring) {
            return;
        }
        if self.announced.is_none() {
            self.announce();
        }
        if let Err(e) = self.quote() {
            self.fail((self.next, e.to_string()));
        }
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

/// What the start check found.
struct StartCheck {
    /// (reason, detail) of each disagreement.
    alarms: Vec<(&'static str, String)>,
    /// Batches of the current cycle that the log holds but the PCR does not yet (sealed by an
    /// epoch that died before extending them): extended before the new base is read.
    catch_up: Vec<(u64, [u8; 32])>,
}

/// The start check: the log's newest boot cycle against the TPM as it is now.
fn check(
    info: &TpmInfo,
    trail: &AnchorTrail,
    clock: &ClockInfo,
    counter: u64,
    live: [u8; 32],
) -> StartCheck {
    let mut alarms = Vec::new();
    if let Some(why) = &info.ak_replaced {
        alarms.push(("TPM state mismatch", why.clone()));
    }
    if trail
        .ak_public
        .as_ref()
        .is_some_and(|pinned| *pinned != info.ak_public.public_area)
    {
        alarms.push((
            "TPM state mismatch",
            "the TPM's attestation key is not the one the log pinned: another TPM, or a cleared one".to_string(),
        ));
    }
    let Some((_, newest)) = trail.last_anchor else {
        if !info.counter_defined {
            alarms.push((
                "log wiped",
                format!(
                    "the TPM's NV counter {:#010x} (at {counter}) was defined by an earlier log on this host, but this log holds no anchored batch: the state directory was wiped, replaced or cut back",
                    info.nv_index
                ),
            ));
        }
        return StartCheck {
            alarms,
            catch_up: Vec::new(),
        };
    };
    let now = (clock.reset_count, clock.restart_count);
    let logged = cycle_of(&newest);
    if now > logged {
        // A reboot (or TPM restart) since: the PCR started over, the counter still holds.
        if let Some(outcome) = counter_outcome(counter, newest.nv_counter) {
            alarms.push((outcome.reason(), outcome.detail()));
        }
        return StartCheck {
            alarms,
            catch_up: Vec::new(),
        };
    }
    let log = LogAnchorState::of_trail(trail, logged);
    let tpm = TpmState {
        pcr_value: live,
        covers_batch: None,
        nv_counter: Some(counter),
        reset_count: now.0,
        restart_count: now.1,
    };
    let catch_up = match classify(&log, &tpm) {
        Outcome::Consistent { anchored, .. } => trail.anchored[anchored..].to_vec(),
        outcome => {
            alarms.push((outcome.reason(), outcome.detail()));
            Vec::new()
        }
    };
    StartCheck { alarms, catch_up }
}
