//! What the collector does with each batch a host sends: the answer (ack or refusal, with the
//! batch expected next) and the alarms, by the rules of docs/forwarding.md ("Session").
//! Verification is `sensor_log::Verifier`, the code `sensorctl verify` runs, resumed from
//! the checkpoint held for the host. TPM quotes and replay bases in the log are checked as
//! their batch arrives (`sensor_tpm::Replay`, docs/tpm.md, "The collector as remote
//! verifier").

use ed25519_dalek::VerifyingKey;
use sensor_log::batch::digest;
use sensor_log::forward::{BatchMessage, Hello, Refusal, RefuseCode};
use sensor_log::record::{self, Body, Hash, HostId, Record, TpmEntry, BODY_TAG_TPM};
use sensor_log::{BatchHeader, Reason, Verifier};
use sensor_tpm::remote::{Point, Replay};

use crate::error::Result;
use crate::store::{Alarm, Commit, Held, Host, Store, Verified};

/// The answer to one batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Durably stored, or already held byte for byte.
    Ack(u64),
    Refuse(Refusal),
}

/// What a hello gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Greeting {
    /// An enrolled host: the batch expected next (0: none held yet).
    Known { next_batch: u64 },
    /// Enrolled now, on first contact, with the key its hello announced.
    Enrolled(Box<Host>),
    /// Not enrolled, and the configuration does not enroll on first contact: its batches
    /// are refused until an operator approves it.
    NotEnrolled,
}

/// Attempts at storing one batch when other sessions keep advancing the same host.
const COMMIT_ATTEMPTS: usize = 3;

pub struct Collector {
    store: Box<dyn Store>,
}

impl Collector {
    pub fn new(store: Box<dyn Store>) -> Collector {
        Collector { store }
    }

    pub fn store(&mut self) -> &mut dyn Store {
        self.store.as_mut()
    }

    /// Answers a session's hello from the host its client certificate names: the batch it
    /// should send next. A host not known yet is enrolled with the key its hello announces
    /// when `first_contact` allows it.
    pub fn hello(
        &mut self,
        certified: &HostId,
        hello: &Hello,
        first_contact: bool,
    ) -> Result<Greeting> {
        let next_batch = self.expected(certified)?;
        if self.store.host(certified)?.is_some() {
            return Ok(Greeting::Known { next_batch });
        }
        let announced = hello
            .keys
            .first()
            .and_then(|(epoch, key)| VerifyingKey::from_bytes(key).ok().map(|k| (*epoch, k)));
        match announced {
            Some((key_epoch, public_key)) if first_contact => {
                let host = Host {
                    host_id: *certified,
                    key_epoch,
                    public_key,
                };
                if self.store.enroll(&host, "first_contact")? {
                    Ok(Greeting::Enrolled(Box::new(host)))
                } else {
                    // Another session enrolled it between the look and the insert.
                    Ok(Greeting::Known { next_batch })
                }
            }
            _ => Ok(Greeting::NotEnrolled),
        }
    }

    /// Handles one batch from the host its client certificate names. `Err` only when the
    /// collector's own store fails; everything the peer can do wrong is a refusal.
    pub fn receive(&mut self, certified: &HostId, message: &BatchMessage) -> Result<Reply> {
        self.receive_from(certified, message, None)
    }

    /// [`Collector::receive`] in a session whose hello said the host's log now begins at
    /// batch `oldest`: when the collector expects an earlier batch, the host pruned it before
    /// any collector acknowledged it (its disk limit forced it), and batch `oldest` is taken
    /// across the gap, verified from its own signature on (as a first contact after pruning),
    /// with a `gap` alarm naming the batches that never arrived. Without it the host could
    /// never forward again.
    pub fn receive_from(
        &mut self,
        certified: &HostId,
        message: &BatchMessage,
        oldest: Option<u64>,
    ) -> Result<Reply> {
        let Ok(header) = BatchHeader::decode(&message.header) else {
            let expected = self.expected(certified)?;
            return Ok(refuse(
                0,
                expected,
                RefuseCode::Malformed,
                "the batch header does not decode",
            ));
        };
        let number = header.number;
        if header.host_id != *certified {
            let detail = "the batch's host id is not its client certificate's".to_string();
            self.alarm(certified, "host_mismatch", number, &detail)?;
            let expected = self.expected(certified)?;
            return Ok(refuse(number, expected, RefuseCode::HostMismatch, &detail));
        }
        let Some(host) = self.store.host(certified)? else {
            return Ok(refuse(
                number,
                0,
                RefuseCode::NotEnrolled,
                "this host is not enrolled: an operator approves its key",
            ));
        };
        let batch_digest = digest(&message.header);
        for _ in 0..COMMIT_ATTEMPTS {
            let before = self.store.checkpoint(certified)?;
            // The first batch the collector expected and the host no longer holds.
            let mut pruned_from = None;
            if let Some(cp) = &before {
                let next = cp.log.next_batch;
                if number < next {
                    return self.held_before(certified, &header, message, &batch_digest, next);
                }
                if number > next {
                    if oldest != Some(number) {
                        return Ok(refuse(
                            number,
                            next,
                            RefuseCode::OutOfOrder,
                            &format!("batch {next} comes next"),
                        ));
                    }
                    pruned_from = Some(next);
                }
            }
            let mut verifier = match (&before, pruned_from) {
                (Some(cp), None) => match Verifier::resume(&cp.log) {
                    Ok(v) => v,
                    Err(f) => return Err(crate::Error::Corrupt(format!("a checkpoint: {f}"))),
                },
                // Across the gap, with the key in force at the last batch held.
                (Some(cp), Some(_)) => match VerifyingKey::from_bytes(&cp.log.public_key) {
                    Ok(key) => Verifier::new(key),
                    Err(e) => return Err(crate::Error::Corrupt(format!("a checkpoint key: {e}"))),
                },
                (None, _) => Verifier::new(host.public_key),
            };
            let records: Vec<&[u8]> = message.records.iter().map(Vec::as_slice).collect();
            if let Err(failure) = verifier.message(&message.header, &message.signature, &records) {
                let kind = match failure.reason {
                    Reason::BadSignature => "bad_signature",
                    _ => "invalid",
                };
                self.alarm(certified, kind, number, &failure.to_string())?;
                let expected = before.as_ref().map_or(number, |cp| cp.log.next_batch);
                return Ok(refuse(
                    number,
                    expected,
                    RefuseCode::Invalid,
                    &failure.to_string(),
                ));
            }
            let Some(log) = verifier.checkpoint() else {
                return Err(crate::Error::Corrupt(
                    "a verified batch left no checkpoint".into(),
                ));
            };
            // The replay cannot cross a gap: it starts again at the host's next base.
            let mut tpm = match (&before, pruned_from) {
                (Some(cp), None) => cp.tpm.clone(),
                _ => Replay::default(),
            };
            let store = &mut self.store;
            let (replayed, faults) = anchoring(
                &mut tpm,
                &header,
                &batch_digest,
                &message.records,
                |below, from| store.replayed(certified, below, from),
            )?;
            let after = Held { log, tpm };
            let commit = self.store.commit(&Verified {
                header: &header,
                message,
                digest: batch_digest,
                before: before.as_ref(),
                after: &after,
                replayed,
            })?;
            match commit {
                Commit::Stored => {
                    if let Some(from) = pruned_from {
                        self.alarm(
                            certified,
                            "gap",
                            number,
                            &format!("batches {from} to {} never reached this collector: the host pruned them before any collector acknowledged them", number - 1),
                        )?;
                    } else if before.is_none() && number > 1 {
                        self.alarm(
                            certified,
                            "gap",
                            number,
                            &format!("history before batch {number} never reached this collector"),
                        )?;
                    }
                    if !faults.is_empty() {
                        self.alarm(certified, "tpm", number, &faults.join("; "))?;
                    }
                    return Ok(Reply::Ack(number));
                }
                Commit::Duplicate => return Ok(Reply::Ack(number)),
                Commit::Fork => {
                    let next = self.expected(certified)?;
                    return self.held_before(certified, &header, message, &batch_digest, next);
                }
                Commit::Stale => continue,
            }
        }
        let expected = self.expected(certified)?;
        Ok(refuse(
            number,
            expected,
            RefuseCode::Unavailable,
            "other sessions kept advancing this host: send again",
        ))
    }

    /// Raises a `silent` alarm for every host not heard from for longer than `timeout_ns` at
    /// `now_ns` (a host that stops sending heartbeat batches: cut off, stopped, or blinded);
    /// one alarm per silence, named by the last batch held. Returns the silent hosts.
    pub fn sweep_silent(&mut self, now_ns: u64, timeout_ns: u64) -> Result<Vec<HostId>> {
        let mut silent = Vec::new();
        for h in self.store.heard()? {
            let quiet = now_ns.saturating_sub(h.last_heard_ns);
            if quiet > timeout_ns {
                let last = h.last_batch.unwrap_or(0);
                let detail = format!(
                    "nothing from this host for {} s (last batch held: {last})",
                    quiet / 1_000_000_000
                );
                self.alarm(&h.host_id, "silent", last, &detail)?;
                silent.push(h.host_id);
            }
        }
        Ok(silent)
    }

    /// A batch under a number already held: the same bytes are a resend, other bytes a fork,
    /// kept as evidence. Signed by a key the collector knows for the host (pinned or
    /// announced), it is the host's own log restored from an older copy (or rewritten with
    /// its key): `fork`. Signed by any other key, it is a log the collector never saw begin,
    /// a host wiped and started from scratch (or a forgery): `new_log`.
    fn held_before(
        &mut self,
        host: &HostId,
        header: &BatchHeader,
        message: &BatchMessage,
        batch_digest: &Hash,
        next: u64,
    ) -> Result<Reply> {
        let number = header.number;
        if self.store.held_digest(host, number)?.as_deref() == Some(&batch_digest[..]) {
            return Ok(Reply::Ack(number));
        }
        self.store.keep_fork(header, message, batch_digest)?;
        let (kind, detail) = if self.signed_by_known_key(host, batch_digest, &message.signature)? {
            (
                "fork",
                format!("a different batch {number} than the one held, signed with the host's key: its log was restored from an older copy or rewritten; both are kept"),
            )
        } else {
            (
                "new_log",
                format!("a different batch {number} than the one held, signed with a key this collector never saw for the host: a new log from scratch (its state was wiped or replaced) or a forgery; both are kept"),
            )
        };
        self.alarm(host, kind, number, &detail)?;
        Ok(refuse(number, next, RefuseCode::Fork, &detail))
    }

    /// Whether `signature` over `batch_digest` verifies with the host's pinned key or the
    /// key in force at the last batch held.
    fn signed_by_known_key(
        &mut self,
        host: &HostId,
        batch_digest: &Hash,
        signature: &[u8],
    ) -> Result<bool> {
        let pinned = self.store.host(host)?.map(|h| h.public_key);
        let current = self
            .store
            .checkpoint(host)?
            .and_then(|cp| VerifyingKey::from_bytes(&cp.log.public_key).ok());
        Ok(pinned
            .into_iter()
            .chain(current)
            .any(|key| sensor_log::batch::signature_valid(&key, batch_digest, signature)))
    }

    /// The batch expected next from the host; 0 when none is held.
    fn expected(&mut self, host: &HostId) -> Result<u64> {
        Ok(self
            .store
            .checkpoint(host)?
            .map_or(0, |cp| cp.log.next_batch))
    }

    /// Raises an alarm and counts it, once: a host resending the same bad batch repeats
    /// neither the row nor the count.
    fn alarm(&mut self, host: &HostId, kind: &str, batch: u64, detail: &str) -> Result<()> {
        let raised = self.store.raise(&Alarm {
            host_id: *host,
            kind: kind.to_string(),
            batch,
            detail: detail.to_string(),
            raised_ns: sensor_log::time::wall_now_ns(),
        })?;
        if raised {
            crate::metrics::alarm(kind);
        }
        Ok(())
    }
}

/// Advances a host's TPM replay over a verified batch: its header, then its TPM entries in
/// order; `earlier(below, from)` gives the newest replayed batch held with `from <= number <
/// below`. Returns the batch's replayed point and what did not hold (a quote not signed by
/// the pinned key, bound to another header or quoting another PCR than the replay; a base
/// naming another key or not continuing the replay; an alarm the host recorded itself). The
/// ingest and `sensor-collector verify` both run it.
pub fn anchoring(
    tpm: &mut Replay,
    header: &BatchHeader,
    batch_digest: &Hash,
    records: &[Vec<u8>],
    mut earlier: impl FnMut(u64, u64) -> Result<Option<Point>>,
) -> Result<(Option<Point>, Vec<String>)> {
    let mut replayed = tpm.header(header.number, batch_digest, header.anchor.as_ref());
    let mut faults = Vec::new();
    for bytes in records {
        // Only the log's TPM entries matter here; events are not decoded twice.
        if record::peek(bytes).map_or(true, |(_, tag)| tag != BODY_TAG_TPM) {
            continue;
        }
        let Ok(Record {
            body: Body::Tpm(entry),
            ..
        }) = Record::decode(bytes)
        else {
            continue;
        };
        let fault = match &entry {
            TpmEntry::Anchored(base) | TpmEntry::Resumed { base, .. } => {
                let fault = tpm.base(base, &mut earlier)?;
                // The base may replay this very batch (chained in the seal that first names
                // its cycle).
                replayed = replayed.or(tpm.last.filter(|p| p.number == header.number));
                fault
            }
            TpmEntry::Quote(q) => tpm.quote(q, &mut earlier)?,
            TpmEntry::Unanchored { .. } => {
                tpm.unanchored();
                None
            }
            TpmEntry::Alarm { reason, detail } => Some(format!(
                "the host recorded a TPM alarm: {reason} ({detail})"
            )),
            TpmEntry::Failing { .. } => None,
        };
        faults.extend(fault);
    }
    Ok((replayed, faults))
}

fn refuse(batch: u64, expected: u64, code: RefuseCode, reason: &str) -> Reply {
    Reply::Refuse(Refusal {
        batch,
        expected,
        code,
        reason: reason.to_string(),
    })
}
