//! `TpmWorker`: one thread owns the TPM connection and runs requests from a bounded queue
//! one at a time, so an extend and a quote never interleave and a slow TPM never blocks the
//! callers for longer than `op_timeout`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{
    channel, sync_channel, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError,
};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use crate::attest::{ClockInfo, Quote};
use crate::config::TpmConfig;
use crate::device::{Connection, TpmInfo};
use crate::error::{Error, Result};

/// Worker threads alive at most, counting ones abandoned inside a hung TPM command. A TPM
/// that never answers costs at most this many threads, never one per call.
const MAX_THREADS: usize = 3;

enum Op {
    Connect,
    Extend([u8; 32]),
    PcrRead,
    Advance,
    ReadCounter,
    Quote([u8; 32]),
    Clock,
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Connect => "connect",
            Op::Extend(_) => "extend",
            Op::PcrRead => "pcr_read",
            Op::Advance => "advance_counter",
            Op::ReadCounter => "read_counter",
            Op::Quote(_) => "quote",
            Op::Clock => "clock_info",
        }
    }
}

enum Reply {
    Info(Box<TpmInfo>),
    Done,
    Pcr([u8; 32]),
    Counter(u64),
    Quote(Box<Quote>),
    Clock(ClockInfo),
}

struct Job {
    op: Op,
    reply: SyncSender<Result<Reply>>,
}

/// The current worker thread's queue, the flag that retires it after a timeout, and the
/// channel that disconnects once it has ended (its TPM connection closed).
struct Slot {
    tx: Option<SyncSender<Job>>,
    abandoned: Arc<AtomicBool>,
    ended: Option<Receiver<()>>,
}

/// Handle to the TPM worker thread. Cheap calls, all `&self`: share it in an `Arc` between
/// the batch anchoring path and the periodic quote/counter timers.
///
/// Failure model: every call returns within about `op_timeout`. A transport or TPM error
/// drops the connection and the next call reconnects (the TPM may have been restarted). A
/// timeout retires the thread (it may stay blocked in the TSS) and the next call starts a
/// fresh one. After a failed or timed-out `extend` the PCR state is unknown: the caller
/// records an anchoring gap and, once calls succeed again, re-bases on `pcr_read()`.
pub struct TpmWorker {
    cfg: Arc<TpmConfig>,
    tcti: Arc<str>,
    slot: Mutex<Slot>,
    live_threads: Arc<AtomicUsize>,
}

/// Decrements the live-thread count however the thread ends, and then disconnects `ended`.
/// `run` takes it as a parameter, so it drops after `run`'s connection.
struct LiveGuard {
    live: Arc<AtomicUsize>,
    _ended: Sender<()>,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for TpmWorker {
    /// Closes the queue and waits (at most `op_timeout`) for the current thread to close its
    /// TPM connection. The agent drops its worker just before the process exits, and a TSS
    /// still finalising on another thread races exit's own teardown: the lane saw a clean
    /// stop abort with heap corruption. A retired thread, stuck in a hung TPM, is not waited
    /// for.
    fn drop(&mut self) {
        let slot = self.slot.get_mut().unwrap_or_else(PoisonError::into_inner);
        slot.tx = None;
        if let Some(ended) = slot.ended.take() {
            // Disconnected is the answer; a timeout leaves a thread stuck in the TSS.
            let _ = ended.recv_timeout(self.cfg.op_timeout);
        }
    }
}

impl TpmWorker {
    /// Resolves the TCTI (`Error::NoTpm` if there is no TPM to use) without talking to the
    /// TPM yet: a TPM that is down at start must not stop the agent. Call `connect` to find
    /// out now, or let the first operation connect.
    pub fn start(config: TpmConfig) -> Result<TpmWorker> {
        let tcti = config.resolve_tcti()?;
        Ok(TpmWorker {
            cfg: Arc::new(config),
            tcti: Arc::from(tcti),
            slot: Mutex::new(Slot {
                tx: None,
                abandoned: Arc::new(AtomicBool::new(false)),
                ended: None,
            }),
            live_threads: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn config(&self) -> &TpmConfig {
        &self.cfg
    }

    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    /// Connects (if not connected), creating the AK and defining the NV counter on the first
    /// start on this TPM, and reports what it found.
    pub fn connect(&self) -> Result<TpmInfo> {
        match self.call(Op::Connect)? {
            Reply::Info(info) => Ok(*info),
            _ => Err(Error::Unexpected("wrong reply kind".into())),
        }
    }

    /// Extends the anchor PCR (SHA-256 bank) with a signed batch header digest.
    pub fn extend(&self, digest: [u8; 32]) -> Result<()> {
        match self.call(Op::Extend(digest))? {
            Reply::Done => Ok(()),
            _ => Err(Error::Unexpected("wrong reply kind".into())),
        }
    }

    /// Current value of the anchor PCR.
    pub fn pcr_read(&self) -> Result<[u8; 32]> {
        match self.call(Op::PcrRead)? {
            Reply::Pcr(v) => Ok(v),
            _ => Err(Error::Unexpected("wrong reply kind".into())),
        }
    }

    /// Increments the NV counter and returns its new value. One NV write on TPMs without
    /// hybrid counters: call it on the `nv_interval` schedule, at start and at clean stop,
    /// never per batch.
    pub fn advance_counter(&self) -> Result<u64> {
        match self.call(Op::Advance)? {
            Reply::Counter(v) => Ok(v),
            _ => Err(Error::Unexpected("wrong reply kind".into())),
        }
    }

    /// Current NV counter value (no write).
    pub fn read_counter(&self) -> Result<u64> {
        match self.call(Op::ReadCounter)? {
            Reply::Counter(v) => Ok(v),
            _ => Err(Error::Unexpected("wrong reply kind".into())),
        }
    }

    /// Quotes the anchor PCR with the AK over `qualifying_data` (a verifier's nonce, or
    /// `replay::quote_binding` for the agent's periodic self-quotes).
    pub fn quote(&self, qualifying_data: [u8; 32]) -> Result<Quote> {
        match self.call(Op::Quote(qualifying_data))? {
            Reply::Quote(q) => Ok(*q),
            _ => Err(Error::Unexpected("wrong reply kind".into())),
        }
    }

    /// TPM reset and restart counts (and clock), taken from a quote with zero qualifying data.
    pub fn clock_info(&self) -> Result<ClockInfo> {
        match self.call(Op::Clock)? {
            Reply::Clock(c) => Ok(c),
            _ => Err(Error::Unexpected("wrong reply kind".into())),
        }
    }

    fn call(&self, op: Op) -> Result<Reply> {
        let name = op.name();
        let (reply_tx, reply_rx) = sync_channel(1);
        let abandoned = {
            let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.tx.is_none() {
                self.spawn(&mut slot)?;
            }
            let Some(tx) = slot.tx.as_ref() else {
                return Err(Error::Unavailable("no worker thread".into()));
            };
            match tx.try_send(Job {
                op,
                reply: reply_tx,
            }) {
                Ok(()) => Arc::clone(&slot.abandoned),
                Err(TrySendError::Full(_)) => {
                    return Err(Error::Busy {
                        depth: self.cfg.queue_depth,
                    })
                }
                Err(TrySendError::Disconnected(_)) => {
                    slot.tx = None;
                    return Err(Error::Unavailable("TPM worker thread ended".into()));
                }
            }
        };
        match reply_rx.recv_timeout(self.cfg.op_timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => {
                self.retire(&abandoned);
                Err(Error::Timeout {
                    op: name,
                    timeout: self.cfg.op_timeout,
                })
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.retire(&abandoned);
                Err(Error::Unavailable(format!("TPM worker dropped {name}")))
            }
        }
    }

    /// Retires the thread that owns `abandoned` (if it is still the current one): it runs
    /// nothing more once its blocked command returns, so no stale extend lands late.
    fn retire(&self, abandoned: &Arc<AtomicBool>) {
        abandoned.store(true, Ordering::SeqCst);
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if Arc::ptr_eq(&slot.abandoned, abandoned) {
            slot.tx = None;
            slot.ended = None;
        }
    }

    fn spawn(&self, slot: &mut Slot) -> Result<()> {
        let live = self.live_threads.load(Ordering::SeqCst);
        if live >= MAX_THREADS {
            return Err(Error::Unavailable(format!(
                "{live} TPM worker threads are still blocked in earlier commands"
            )));
        }
        let (tx, rx) = sync_channel(self.cfg.queue_depth);
        let abandoned = Arc::new(AtomicBool::new(false));
        let cfg = Arc::clone(&self.cfg);
        let tcti = Arc::clone(&self.tcti);
        let flag = Arc::clone(&abandoned);
        let (ended_tx, ended) = channel();
        self.live_threads.fetch_add(1, Ordering::SeqCst);
        let guard = LiveGuard {
            live: Arc::clone(&self.live_threads),
            _ended: ended_tx,
        };
        thread::Builder::new()
            .name("sensor-tpm".into())
            .spawn(move || run(&cfg, &tcti, rx, &flag, guard))
            .map_err(|e| Error::Unavailable(format!("cannot start TPM worker thread: {e}")))?;
        slot.tx = Some(tx);
        slot.abandoned = abandoned;
        slot.ended = Some(ended);
        Ok(())
    }
}

fn run(cfg: &TpmConfig, tcti: &str, rx: Receiver<Job>, abandoned: &AtomicBool, _live: LiveGuard) {
    let mut conn: Option<Connection> = None;
    while let Ok(job) = rx.recv() {
        if abandoned.load(Ordering::SeqCst) {
            // Dropping `rx` with the queue fails the waiting callers at once.
            return;
        }
        let result = execute(cfg, tcti, &mut conn, job.op);
        if result.is_err() {
            // Reconnect next time: after a transport error the old context is unusable, and
            // after a TPM error a fresh one costs little.
            conn = None;
        }
        // The caller may have timed out and gone; nothing to do then.
        let _ = job.reply.try_send(result);
    }
}

fn execute(cfg: &TpmConfig, tcti: &str, conn: &mut Option<Connection>, op: Op) -> Result<Reply> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(Connection::open(cfg, tcti)?),
    };
    Ok(match op {
        Op::Connect => Reply::Info(Box::new(c.info.clone())),
        Op::Extend(d) => {
            c.extend(d)?;
            Reply::Done
        }
        Op::PcrRead => Reply::Pcr(c.pcr_read()?),
        Op::Advance => Reply::Counter(c.advance_counter()?),
        Op::ReadCounter => Reply::Counter(c.read_counter()?),
        Op::Quote(q) => Reply::Quote(Box::new(c.quote(q)?)),
        Op::Clock => Reply::Clock(c.clock_info()?),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The agent drops its worker just before the process exits: when `drop` returns, the
    /// thread must have closed its TPM connection (`run` drops it before its `LiveGuard`).
    #[test]
    fn dropping_the_worker_waits_for_its_thread_to_close_the_tpm() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tpm = swtpm_harness::Swtpm::start(dir.path()).unwrap_or_else(|e| {
            panic!("cannot start swtpm ({e}); run `cargo xtask setup` to install it")
        });
        for round in 0..5 {
            let worker = TpmWorker::start(TpmConfig {
                tcti: Some(tpm.tcti()),
                op_timeout: Duration::from_secs(10),
                ..TpmConfig::default()
            })
            .expect("worker starts");
            worker.connect().expect("connects");
            let live = Arc::clone(&worker.live_threads);
            assert_eq!(live.load(Ordering::SeqCst), 1, "round {round}");
            drop(worker);
            assert_eq!(
                live.load(Ordering::SeqCst),
                0,
                "round {round}: the worker thread outlived its TpmWorker"
            );
        }
    }
}
