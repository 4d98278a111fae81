//! Forward stage: sends every sealed batch to a collector (docs/forwarding.md) and counts
//! it safe only once a collector acknowledged it, which means it is durably committed where
//! this host's root cannot reach.
//!
//! The local store is the outbox: the stage reads sealed batches from it in order (its own
//! read-only connection), keeps up to a window of them unanswered, and never talks to the
//! chain stage beyond a wake-up at each sealed batch, so a collector that is down, slow or
//! refusing costs lag and nothing else. Collectors are tried in the configured order; after
//! a failed round the stage backs off (250 ms doubling to 30 s, with full jitter).
//!
//! A collector's welcome is authoritative: it says which batch it needs next, so an
//! acknowledgement lost with a crash only costs a resend, which the collector acknowledges
//! again and stores once. A collector that holds more than this log has sealed is never
//! taken at its word: the stage sends its own newest batch, which the collector finds
//! different from the one it holds and keeps as a fork, with its alarm. The cursor
//! (`forward.json`) keeps the last acknowledged batch for `sensorctl status` and for the next
//! start.
//!
//! Each acknowledgement is timed from the batch's seal (its signed header's wall time):
//! `sensor_forward_exposure_seconds`, how long sealed records stayed where this host's root
//! could still change them.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use sensor_forward::client::{Answer, Session};
use sensor_forward::tls::ClientConfig;
use sensor_log::batch::BatchHeader;
use sensor_log::forward::{Hello, RefuseCode};
use sensor_log::hex;
use sensor_log::record::HostId;
use sensor_log::time::{rfc3339, wall_now_ns};
use sensor_store::{ForwardStatus, Store};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::Counters;
use crate::config::ForwardConfig;
use crate::error::Error;

/// The cursor file in the state directory.
pub const CURSOR_FILE: &str = "forward.json";
/// First and longest wait between two rounds of failed connections.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Least time between two writes of the cursor.
const CURSOR_PERIOD: Duration = Duration::from_secs(1);
/// Longest wait for a batch sealed without a wake-up (a safety net, not the path).
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// At stop, how long collectors get to acknowledge the batches sealed last (the stop's own
/// among them) before the agent exits; what they did not take waits for the next start.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// How a session ended.
enum Ended {
    /// Stopping, and every batch of the closed log is acknowledged.
    Drained,
    /// The connection or the collector failed; why.
    Failed(String),
}
/// Least time between two updates of the status from the session loop, which turns at
/// every answer and every sealed batch: each update reads the store twice.
const PUBLISH_PERIOD: Duration = Duration::from_secs(1);
/// Seconds from a batch's seal to its acknowledgement (a Prometheus summary).
pub const EXPOSURE_METRIC: &str = "sensor_forward_exposure_seconds";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Cursor {
    /// The newest batch a collector acknowledged; 0 for none.
    acked: u64,
    collector: String,
}

pub struct ForwardStage {
    config: ForwardConfig,
    tls: Arc<ClientConfig>,
    store: Arc<Mutex<Store>>,
    host_id: HostId,
    state_dir: PathBuf,
    counters: Arc<Counters>,
    cursor: Cursor,
    cursor_written: std::time::Instant,
    published: std::time::Instant,
    status: ForwardStatus,
    /// Failed rounds in a row; reset by a welcome.
    failures: u32,
    /// Stopping: a session ends once the closed log is all acknowledged.
    draining: bool,
}

impl ForwardStage {
    /// Loads the TLS files (each error names its key) and checks that the certificate names
    /// this log's host: a collector identifies the host by it, and would refuse every batch.
    pub fn new(
        config: ForwardConfig,
        state_dir: &Path,
        host_id: HostId,
        counters: Arc<Counters>,
    ) -> Result<ForwardStage, Error> {
        let (tls, named) = sensor_forward::tls::host_client_config(
            &config.client_cert,
            &config.client_key,
            &config.ca,
        )
        .map_err(|e| Error::Forward {
            key: "client_cert",
            reason: e.to_string(),
        })?;
        let store = Store::open_read_only(state_dir).map_err(Error::Log)?;
        if named != host_id {
            return Err(Error::Forward {
                key: "client_cert",
                reason: format!(
                    "{} names host {}, but this log is host {} ({}/host-id)",
                    config.client_cert.display(),
                    hex::encode(named),
                    hex::encode(host_id),
                    state_dir.display()
                ),
            });
        }
        let cursor = std::fs::read(state_dir.join(CURSOR_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let cursor: Cursor = cursor;
        let status = ForwardStatus {
            last_acked: (cursor.acked > 0).then_some(cursor.acked),
            ..ForwardStatus::default()
        };
        // From now on, retention keeps what no collector acknowledged.
        *counters.forward.lock().unwrap_or_else(|p| p.into_inner()) = Some(status.clone());
        Ok(ForwardStage {
            config,
            tls,
            store: Arc::new(Mutex::new(store)),
            host_id,
            state_dir: state_dir.to_owned(),
            counters,
            cursor,
            cursor_written: std::time::Instant::now(),
            published: std::time::Instant::now(),
            status,
            failures: 0,
            draining: false,
        })
    }

    /// Forwards until `stop` fires; never fails for a collector's sake.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), Error> {
        self.publish(None).await;
        let collectors = self.config.collectors.clone();
        'rounds: loop {
            for addr in &collectors {
                let ended = tokio::select! {
                    ended = self.session(addr) => ended,
                    _ = stop.changed() => break 'rounds,
                };
                self.session_failed(addr, ended).await;
            }
            let wait = backoff(self.failures);
            self.failures = self.failures.saturating_add(1);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break 'rounds,
            }
        }
        self.drain(&collectors).await;
        self.save_cursor();
        Ok(())
    }

    /// At stop, a last session (each collector in turn, within [`DRAIN_LIMIT`]) sends what
    /// the log sealed last, the stop's own batch among it, so a collector learns of a clean
    /// stop when it happens, not at the next start.
    async fn drain(&mut self, collectors: &[String]) {
        self.draining = true;
        let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
        for addr in collectors {
            match tokio::time::timeout_at(deadline, self.session(addr)).await {
                Ok(Ended::Drained) => return,
                Ok(failed) => self.session_failed(addr, failed).await,
                Err(_) => break,
            }
        }
        tracing::warn!(
            "stopping with batches no collector acknowledged (the newest acknowledged: {}); they are sent at the next start",
            self.cursor.acked
        );
    }

    async fn session_failed(&mut self, addr: &str, ended: Ended) {
        let Ended::Failed(why) = ended else {
            return;
        };
        tracing::warn!(collector = %addr, "forwarding: {why}");
        self.status.connected = false;
        self.status.last_error = Some(format!("{}: {addr}: {why}", rfc3339(wall_now_ns())));
        self.publish(None).await;
    }

    /// One session with the collector at `addr`, until it fails, or, stopping, until the
    /// closed log is all acknowledged.
    async fn session(&mut self, addr: &str) -> Ended {
        let failed = |e: &dyn std::fmt::Display| Ended::Failed(e.to_string());
        let (oldest, newest) = match self.span().await {
            Ok(span) => span,
            Err(e) => return failed(&e),
        };
        let hello = match self.hello(oldest, newest).await {
            Ok(hello) => hello,
            Err(e) => return failed(&e),
        };
        let server_name = self
            .config
            .server_name
            .clone()
            .unwrap_or_else(|| host_part(addr).to_owned());
        let mut session =
            match Session::connect(addr, &server_name, Arc::clone(&self.tls), hello).await {
                Ok(s) => s,
                Err(e) => return failed(&e),
            };
        self.failures = 0;
        let welcome = session.welcome().clone();
        tracing::info!(collector = %addr, name = %welcome.collector, next = welcome.next_batch, "forwarding to a collector");
        self.status.collector = format!("{} ({addr})", welcome.collector);
        self.status.connected = true;
        self.cursor.collector = self.status.collector.clone();
        let window = usize::from(self.config.window.min(welcome.window).max(1));
        let mut next = if welcome.next_batch > newest.saturating_add(1) {
            // The collector holds batches this log never sealed: the log was rolled back
            // (restored from an older copy) or replaced. Its newest batch goes first, so the
            // collector compares it with the one it holds and keeps both as evidence.
            tracing::error!(
                collector = %addr,
                "the collector holds batches up to {} but this log ends at batch {newest}: it was rolled back or replaced",
                welcome.next_batch - 1
            );
            newest.max(oldest).max(1)
        } else {
            if welcome.next_batch > 1 {
                self.acked(welcome.next_batch - 1);
            }
            welcome.next_batch.max(oldest).max(1)
        };
        let mut newest = newest;
        // Sent and unanswered: (batch number, its sealed wall time).
        let mut in_flight: VecDeque<(u64, u64)> = VecDeque::new();
        let mut refusals: u32 = 0;
        loop {
            while in_flight.len() < window && next <= newest {
                let batch = match self.read(next).await {
                    Ok(Some(batch)) => batch,
                    // Pruned before a collector acknowledged it (the disk limit forced it):
                    // a new session's hello says where the log begins now, and the
                    // collector takes the gap with its alarm.
                    Ok(None) => match self.span().await {
                        Ok((oldest, _)) if oldest > next => {
                            return Ended::Failed(format!(
                                "batch {next} was pruned before a collector acknowledged it; the log begins at batch {oldest} now"
                            ))
                        }
                        Ok(_) => break,
                        Err(e) => return failed(&e),
                    },
                    Err(e) => return failed(&e),
                };
                // 0 (never timed) if the header does not decode; the collector will say why.
                let sealed = BatchHeader::decode(&batch.header).map_or(0, |h| h.wall_ns);
                if let Err(e) = session.send(&batch).await {
                    return failed(&e);
                }
                in_flight.push_back((next, sealed));
                next += 1;
            }
            if self.published.elapsed() >= PUBLISH_PERIOD {
                self.publish(Some(newest)).await;
            }
            tokio::select! {
                answer = session.answer(), if !in_flight.is_empty() => {
                    let answer = match answer {
                        Ok(a) => a,
                        Err(e) => return failed(&e),
                    };
                    match answer {
                        Answer::Ack(n) if in_flight.front().map(|f| f.0) == Some(n) => {
                            if let Some((_, sealed)) = in_flight.pop_front() {
                                exposed(sealed);
                            }
                            refusals = 0;
                            self.acked(n);
                        }
                        Answer::Ack(n) => {
                            return Ended::Failed(format!("acknowledged batch {n} out of turn (expected {:?})", in_flight.front().map(|f| f.0)));
                        }
                        Answer::Refuse(r) => {
                            in_flight.pop_front();
                            // The collector refuses everything after it until `expected`:
                            // take those answers, then go on from there.
                            while let Some((_, sealed)) = in_flight.pop_front() {
                                match session.answer().await {
                                    Ok(Answer::Ack(n)) => {
                                        exposed(sealed);
                                        self.acked(n);
                                    }
                                    Ok(Answer::Refuse(_)) => {}
                                    Err(e) => return failed(&e),
                                }
                            }
                            next = if r.expected == 0 { oldest.max(1) } else { r.expected };
                            if r.code != RefuseCode::OutOfOrder {
                                tracing::warn!(collector = %addr, batch = r.batch, code = %r.code, "a collector refused a batch: {}", r.reason);
                                self.status.last_refusal = Some(format!(
                                    "{}: batch {}: {}: {}",
                                    rfc3339(wall_now_ns()),
                                    r.batch,
                                    r.code,
                                    r.reason
                                ));
                                self.publish(Some(newest)).await;
                                // The collector has the alarm; resending at once would only
                                // repeat it. Lag grows meanwhile, and status says why.
                                tokio::time::sleep(backoff(refusals)).await;
                                refusals = refusals.saturating_add(1);
                            }
                        }
                    }
                }
                () = self.counters.sealed_notify.notified() => {}
                () = tokio::time::sleep(IDLE_CHECK) => {}
            }
            // Read before the newest batch: once closed, the log seals nothing after it.
            let closed = self.counters.log_closed.load(Ordering::Acquire);
            newest = self.newest_sealed().unwrap_or(newest);
            if self.draining && closed && in_flight.is_empty() && next > newest {
                return Ended::Drained;
            }
        }
    }

    /// The oldest retained and newest sealed batch numbers.
    async fn span(&self) -> Result<(u64, u64), String> {
        let store = Arc::clone(&self.store);
        blocking(move || {
            let store = store.lock().unwrap_or_else(|p| p.into_inner());
            let oldest = store.first_batch()?.map_or(1, |b| b.number);
            let newest = store.last_batch()?.map_or(0, |b| b.number);
            Ok((oldest, newest))
        })
        .await
    }

    async fn hello(&self, oldest: u64, newest: u64) -> Result<Hello, String> {
        let store = Arc::clone(&self.store);
        let keys =
            blocking(move || store.lock().unwrap_or_else(|p| p.into_inner()).oldest_key()).await?;
        Ok(Hello {
            host_id: self.host_id,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            oldest,
            newest,
            keys: keys
                .map(|(epoch, key)| (epoch, key.to_bytes()))
                .into_iter()
                .collect(),
        })
    }

    async fn read(&self, number: u64) -> Result<Option<sensor_log::forward::BatchMessage>, String> {
        let store = Arc::clone(&self.store);
        blocking(move || {
            store
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .outbox_batch(number)
        })
        .await
    }

    fn newest_sealed(&self) -> Option<u64> {
        self.counters
            .last_batch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|(number, _, _)| number)
    }

    fn acked(&mut self, n: u64) {
        if n <= self.cursor.acked {
            return;
        }
        self.cursor.acked = n;
        self.status.last_acked = Some(n);
        if self.cursor_written.elapsed() >= CURSOR_PERIOD {
            self.save_cursor();
        }
    }

    /// Writes the cursor (temp file, fsync, rename): a lost one only costs resends.
    fn save_cursor(&mut self) {
        self.cursor_written = std::time::Instant::now();
        let path = self.state_dir.join(CURSOR_FILE);
        let tmp = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let bytes = serde_json::to_vec(&self.cursor).map_err(std::io::Error::other)?;
            let file = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut &file, &bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            tracing::warn!("forwarding cursor {}: {e}", path.display());
        }
    }

    /// Puts what the stage knows into the status the status stage publishes: lag in batches
    /// and records, and the age of the oldest batch not acknowledged.
    async fn publish(&mut self, newest: Option<u64>) {
        self.published = std::time::Instant::now();
        let acked = self.cursor.acked;
        let newest = newest.or_else(|| self.newest_sealed()).unwrap_or(acked);
        self.status.batches_behind = newest.saturating_sub(acked);
        let store = Arc::clone(&self.store);
        let behind = blocking(move || {
            let store = store.lock().unwrap_or_else(|p| p.into_inner());
            let Some(first) = store.batch(acked + 1)? else {
                return Ok((0, None));
            };
            let end = store
                .last_batch()?
                .map_or(0, |b| b.header.first_seq + b.header.count);
            Ok((
                end.saturating_sub(first.header.first_seq),
                Some(first.header.wall_ns),
            ))
        })
        .await;
        match behind {
            Ok((records, oldest_wall)) => {
                self.status.records_behind = records;
                self.status.oldest_unacked_age_s =
                    oldest_wall.map(|w| wall_now_ns().saturating_sub(w) / 1_000_000_000);
            }
            Err(e) => tracing::debug!("forwarding status: {e}"),
        }
        *self
            .counters
            .forward
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(self.status.clone());
    }
}

/// Records the exposure of a batch sealed at `sealed_ns` (wall time), acknowledged now.
fn exposed(sealed_ns: u64) {
    if sealed_ns > 0 {
        let ns = wall_now_ns().saturating_sub(sealed_ns);
        metrics::histogram!(EXPOSURE_METRIC).record(ns as f64 / 1e9);
    }
}

/// Runs a store read off the runtime's threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, sensor_store::Error> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(|e| format!("reading the local log: {e}")),
        Err(e) => Err(format!("reading the local log: {e}")),
    }
}

/// `min(30 s, 250 ms · 2^failures)`, with full jitter: a fleet that lost its collector does
/// not come back in step.
fn backoff(failures: u32) -> Duration {
    let cap = BACKOFF_FIRST
        .saturating_mul(1u32.checked_shl(failures.min(16)).unwrap_or(u32::MAX))
        .min(BACKOFF_MAX);
    let jitter = getrandom::u64().unwrap_or(u64::MAX / 2);
    cap.mul_f64(jitter as f64 / u64::MAX as f64)
}

/// `host` of `host:port` (brackets of an IPv6 literal removed).
fn host_part(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}
