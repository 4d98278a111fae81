//! The verifier: walks every retained batch and record of a `BatchSource` (the agent's store,
//! a collector's store, a file of exported batches) and reports the first failure. The rules
//! are those of docs/log-format.md, "Verification".
//!
//! It starts at the oldest retained batch and trusts that batch's signed `prev_digest`,
//! `prev_head` and `first_seq` as the starting point (older batches may have been pruned;
//! a `Pruned` record must then account for them). Keys: the pinned key, or the source's key
//! for the oldest batch's key epoch (trust on first use), then each `KeyRotation` in turn.
//!
//! Event records are hashed but their bodies are not decoded (the signed Merkle root and chain
//! already cover every byte); log-internal records are decoded because their content (epoch
//! links, key rotations, pruning) drives the checks.

use ed25519_dalek::VerifyingKey;

use crate::anchor::TrailBuilder;
use crate::batch::{self, BatchHeader, BATCH_VERSION};
use crate::chain::GENESIS_HEAD;
use crate::merkle;
use crate::record::{self, Body, EndReason, Hash, HostId, Record, BODY_TAG_EVENT};
/// How many records the verifier reads and hashes ahead of its walk, per chunk.
pub use crate::rows::CHUNK_RECORDS as READ_AHEAD_RECORDS;
use crate::rows::{Hasher, Rows};
use crate::source::{BatchSource, SourceBatch, SourceRecord, VerifiedBatch};
use crate::verdict::{Failure, Position, Reason, Summary, Verdict};

/// Verifies every batch and record `source` yields. `Err` only when the source cannot be
/// read; tampering is a `Verdict`.
pub fn verify<S: BatchSource>(
    source: &mut S,
    pinned: Option<&VerifyingKey>,
) -> Result<Verdict, S::Error> {
    match Verifier::with_pinned(pinned.copied()).run(source) {
        Ok(summary) => Ok(Verdict::Intact(summary)),
        Err(Stop::Tampered(f)) => Ok(Verdict::Tampered(f)),
        Err(Stop::Error(e)) => Err(e),
    }
}

enum Stop<E> {
    Error(E),
    Tampered(Failure),
}

/// Reads from the source; its errors stop the walk as errors, not as tampering.
fn read<T, E>(r: Result<T, E>) -> Result<T, Stop<E>> {
    r.map_err(Stop::Error)
}

fn tampered<T, E>(
    position: Position,
    reason: Reason,
    detail: impl Into<String>,
) -> Result<T, Stop<E>> {
    Err(Stop::Tampered(Failure {
        position,
        reason,
        detail: detail.into(),
    }))
}

/// What a verifier holds between two batches of a log: enough to check that the next batch
/// continues it (a collector stores one per host).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub host_id: HostId,
    /// The key epoch in force and its public key (a rotation announced in the last batch is
    /// already in force).
    pub key_epoch: u64,
    pub public_key: [u8; 32],
    pub next_batch: u64,
    pub next_seq: u64,
    /// Digest of the last batch header and the chain head after its last record.
    pub prev_digest: Hash,
    pub head: Hash,
    /// The epoch of the last record, `None` before any.
    pub epoch: Option<u64>,
    /// The first seq the log had when verification began (above 1: it began after pruning),
    /// and whether a `Pruned` record has accounted for the records before it.
    pub first_seq: u64,
    pub pruning_accounted: bool,
}

/// The records of one message, as a source with no batches of its own.
struct Message<'m> {
    records: std::slice::Iter<'m, &'m [u8]>,
}

impl BatchSource for Message<'_> {
    type Error = std::convert::Infallible;

    fn next_batch(&mut self, _batch: &mut SourceBatch) -> Result<bool, Self::Error> {
        Ok(false)
    }

    fn next_record(&mut self, record: &mut SourceRecord) -> Result<bool, Self::Error> {
        let Some(bytes) = self.records.next() else {
            return Ok(false);
        };
        record.seq = None;
        record.leaf = None;
        record.bytes.clear();
        record.bytes.extend_from_slice(bytes);
        Ok(true)
    }

    fn public_key(&mut self, _key_epoch: u64) -> Result<Option<VerifyingKey>, Self::Error> {
        Ok(None)
    }
}

/// Verifies a log batch after batch. `verify` runs one over a whole source; a collector runs
/// one per host over the batches as they arrive (`Verifier::message`), keeping a
/// `Checkpoint` between them, so both apply exactly the same rules.
#[derive(Debug)]
pub struct Verifier {
    pinned: Option<VerifyingKey>,
    summary: Summary,
    started: bool,
    host_id: HostId,
    key: Option<VerifyingKey>,
    key_epoch: u64,
    /// A key announced in the current batch, in force from the next batch.
    rotation: Option<(u64, VerifyingKey)>,
    next_batch: u64,
    next_seq: u64,
    prev_digest: Hash,
    head: Hash,
    epoch: Option<u64>,
    pruning_accounted: bool,
    leaves: Vec<Hash>,
    /// The anchoring trail, from verified headers and TPM entries only.
    anchor: TrailBuilder,
    /// Smallest and largest record `wall_ns` and the record bytes of the current batch, for
    /// the source to compare with what it keeps beside the signed bytes.
    wall_range: (u64, u64),
    batch_bytes: u64,
}

impl Verifier {
    /// A verifier of a log from its first retained batch on, with the key that signed it.
    pub fn new(key: VerifyingKey) -> Verifier {
        Verifier::with_pinned(Some(key))
    }

    fn with_pinned(pinned: Option<VerifyingKey>) -> Verifier {
        Verifier {
            pinned,
            summary: Summary::default(),
            started: false,
            host_id: [0; 16],
            key: None,
            key_epoch: 0,
            rotation: None,
            next_batch: 0,
            next_seq: 0,
            prev_digest: [0; 32],
            head: GENESIS_HEAD,
            epoch: None,
            pruning_accounted: false,
            leaves: Vec::new(),
            anchor: TrailBuilder::default(),
            wall_range: (u64::MAX, 0),
            batch_bytes: 0,
        }
    }

    /// Goes on from `checkpoint`, the state after the last batch a verifier accepted.
    pub fn resume(checkpoint: &Checkpoint) -> Result<Verifier, Failure> {
        let key = VerifyingKey::from_bytes(&checkpoint.public_key).map_err(|e| Failure {
            position: Position::Batch(checkpoint.next_batch),
            reason: Reason::BadSignature,
            detail: format!("the checkpoint's key is not an Ed25519 public key: {e}"),
        })?;
        let mut verifier = Verifier::new(key);
        verifier.enter(key, checkpoint);
        Ok(verifier)
    }

    /// Takes up the state of `at`, with `key` in force.
    fn enter(&mut self, key: VerifyingKey, at: &Checkpoint) {
        self.started = true;
        self.host_id = at.host_id;
        self.key = Some(key);
        self.key_epoch = at.key_epoch;
        self.next_batch = at.next_batch;
        self.next_seq = at.next_seq;
        self.prev_digest = at.prev_digest;
        self.head = at.head;
        self.epoch = at.epoch;
        self.pruning_accounted = at.pruning_accounted;
        self.summary.first_seq = at.first_seq;
        self.summary.pruned_before = (at.first_seq > 1).then_some(at.first_seq);
    }

    /// What the next batch is checked against; `None` before the first batch.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        Some(Checkpoint {
            host_id: self.host_id,
            key_epoch: self.key_epoch,
            public_key: self.key?.to_bytes(),
            next_batch: self.next_batch,
            next_seq: self.next_seq,
            prev_digest: self.prev_digest,
            head: self.head,
            epoch: self.epoch,
            first_seq: self.summary.first_seq,
            pruning_accounted: self.pruning_accounted,
        })
        .filter(|_| self.started)
    }

    /// Verifies one batch with exactly its records, as one message of a forwarding protocol
    /// carries them, by the rules `verify` applies to a whole log. On success the verifier
    /// expects the next batch. On a failure it is left inside the refused batch: resume from
    /// the last checkpoint to go on (a collector refuses the batch and keeps what it held).
    pub fn message(
        &mut self,
        header: &[u8],
        signature: &[u8],
        records: &[&[u8]],
    ) -> Result<BatchHeader, Failure> {
        let mut message = Message {
            records: records.iter(),
        };
        let mut rows = Rows::new(&mut message);
        rows.chain_from(self.head);
        let checked = self
            .batch(None, header, signature, &mut rows)
            .and_then(|decoded| match read(rows.next())? {
                Some(extra) => {
                    let seq = record::peek(&extra.record.bytes).map_or(self.next_seq, |(h, _)| h.seq);
                    tampered(
                        Position::Seq(seq),
                        Reason::Inserted,
                        "no signed batch covers this record: the message carries more records than its header counts",
                    )
                }
                None => Ok(decoded),
            });
        match checked {
            Ok(decoded) => Ok(decoded),
            Err(Stop::Tampered(failure)) => Err(failure),
            Err(Stop::Error(never)) => match never {},
        }
    }

    /// The checks at the end of a log, for a verifier fed by `message`: the summary of what
    /// it accepted since it was created or resumed, or the failure a whole-log `verify` would
    /// report at the end.
    pub fn end(mut self) -> Result<Summary, Failure> {
        match self.finish::<std::convert::Infallible>() {
            Ok(summary) => Ok(summary),
            Err(Stop::Tampered(failure)) => Err(failure),
            Err(Stop::Error(never)) => match never {},
        }
    }

    /// The whole walk, with the records hashed on a second thread (`rows`).
    fn run<S: BatchSource>(self, source: &mut S) -> Result<Summary, Stop<S::Error>> {
        std::thread::scope(|scope| self.walk(Rows::with_hasher(source, Hasher::spawn(scope))))
    }

    fn walk<S: BatchSource>(mut self, mut rows: Rows<'_, S>) -> Result<Summary, Stop<S::Error>> {
        let walk = &mut self;
        let mut batch = SourceBatch::default();
        while read(rows.source.next_batch(&mut batch))? {
            walk.batch(batch.number, &batch.header, &batch.signature, &mut rows)?;
        }
        if !walk.started {
            return tampered(
                Position::Batch(1),
                Reason::Deleted,
                "the log has no batches: a log begins at batch 1 or at a signed Pruned record",
            );
        }
        if let Some(row) = read(rows.next())? {
            let seq = row
                .record
                .seq
                .or_else(|| record::peek(&row.record.bytes).ok().map(|(h, _)| h.seq))
                .unwrap_or(walk.next_seq);
            return tampered(
                Position::Seq(seq),
                Reason::Inserted,
                "no signed batch covers this record",
            );
        }
        walk.finish()
    }

    /// The checks at the end of a log: a log that starts after pruning names its pruning.
    fn finish<E>(&mut self) -> Result<Summary, Stop<E>> {
        *self.summary.anchor = std::mem::take(&mut self.anchor).finish();
        if let Some(first) = self.summary.pruned_before {
            if !self.pruning_accounted {
                return tampered(
                    Position::Seq(first - 1),
                    Reason::Deleted,
                    format!("records before {first} are gone and no Pruned record says so"),
                );
            }
        }
        Ok(std::mem::take(&mut self.summary))
    }

    fn start<S: BatchSource>(
        &mut self,
        header: &BatchHeader,
        source: &mut S,
    ) -> Result<(), Stop<S::Error>> {
        let position = Position::Batch(header.number);
        self.key = match self.pinned {
            Some(k) => Some(k),
            None => {
                self.summary.key_from_store = true;
                read(source.public_key(header.key_epoch))?
            }
        };
        let Some(key) = self.key else {
            return tampered(
                position,
                Reason::BadSignature,
                format!(
                    "no public key for key epoch {}: none pinned, none in the log's source",
                    header.key_epoch
                ),
            );
        };
        if header.number == 1
            && (header.epoch != 1
                || header.first_seq != 1
                || header.prev_digest != [0; 32]
                || header.prev_head != GENESIS_HEAD)
        {
            return tampered(
                position,
                Reason::Modified,
                "batch 1 does not start at the genesis",
            );
        }
        self.enter(
            key,
            &Checkpoint {
                host_id: header.host_id,
                key_epoch: header.key_epoch,
                public_key: key.to_bytes(),
                next_batch: header.number,
                next_seq: header.first_seq,
                prev_digest: header.prev_digest,
                head: header.prev_head,
                epoch: None,
                first_seq: header.first_seq,
                pruning_accounted: false,
            },
        );
        self.summary.first_batch = header.number;
        Ok(())
    }

    /// One batch, filed under `stored_number` when its source keeps one, and its records
    /// from `rows`; returns its decoded header.
    fn batch<S: BatchSource>(
        &mut self,
        stored_number: Option<u64>,
        header_bytes: &[u8],
        signature: &[u8],
        rows: &mut Rows<'_, S>,
    ) -> Result<BatchHeader, Stop<S::Error>> {
        let header = match BatchHeader::decode(header_bytes) {
            Ok(h) => h,
            Err(e) => {
                let number = stored_number.unwrap_or(self.next_batch.max(1));
                return tampered(
                    Position::Batch(number),
                    Reason::Modified,
                    format!("header does not decode: {e}"),
                );
            }
        };
        let first = !self.started;
        if first {
            self.start(&header, rows.source)?;
            rows.chain_from(self.head);
        }
        // A source that files batches under a number of its own (a row key) is held to it; a
        // file of batches is numbered by the signed headers alone.
        let number = stored_number.unwrap_or(header.number);
        let here = Position::Batch(number);
        if number < self.next_batch && !first {
            // Only a source numbered by the headers (a file) can hold a batch twice.
            return tampered(
                here,
                Reason::Inserted,
                format!(
                    "batch {number} comes again after batch {}",
                    self.next_batch - 1
                ),
            );
        }
        if number != self.next_batch {
            return tampered(
                Position::Batch(self.next_batch),
                Reason::Deleted,
                format!(
                    "batch {} is missing (next stored is {number})",
                    self.next_batch
                ),
            );
        }
        let digest = batch::digest(header_bytes);
        if !self
            .key
            .is_some_and(|k| batch::signature_valid(&k, &digest, signature))
        {
            return tampered(
                here,
                Reason::BadSignature,
                format!(
                    "signature does not verify with key epoch {}",
                    self.key_epoch
                ),
            );
        }
        if header.number != number {
            return tampered(
                here,
                Reason::Reordered,
                format!("row holds the signed header of batch {}", header.number),
            );
        }
        let inconsistent = if header.version != BATCH_VERSION {
            Some(format!("unknown format version {}", header.version))
        } else if header.host_id != self.host_id {
            Some("host id differs from the first batch".to_string())
        } else if header.key_epoch != self.key_epoch {
            Some(format!(
                "claims key epoch {} but key epoch {} is in force",
                header.key_epoch, self.key_epoch
            ))
        } else if header.prev_digest != self.prev_digest {
            Some("does not link to the previous batch's digest".to_string())
        } else if header.prev_head != self.head {
            Some("does not continue the previous batch's chain head".to_string())
        } else {
            None
        };
        if let Some(detail) = inconsistent {
            return tampered(here, Reason::Modified, detail);
        }
        // Before the records: a base chained in this very batch may start replay at it.
        self.anchor.header(number, &digest, header.anchor.as_ref());
        if header.first_seq > self.next_seq {
            return tampered(
                Position::Seq(self.next_seq),
                Reason::Deleted,
                format!("batch {number} starts at seq {}", header.first_seq),
            );
        }
        if header.first_seq < self.next_seq {
            return tampered(
                here,
                Reason::Inserted,
                format!("batch {number} repeats seq {}", header.first_seq),
            );
        }
        let Some(end) = header.first_seq.checked_add(header.count) else {
            return tampered(here, Reason::Modified, "record count overflows");
        };
        // Signed numbers come from outside: none may wrap, and none may crash the walk.
        let Some(next_batch) = number.checked_add(1) else {
            return tampered(
                here,
                Reason::Modified,
                "no batch number can follow this one",
            );
        };
        rows.source.batch_started(&header);
        self.leaves.clear();
        self.wall_range = (u64::MAX, 0);
        self.batch_bytes = 0;
        while self.next_seq < end {
            self.record(&header, rows)?;
        }
        let span = format!(
            "a record of batch {number} (seq {}..{}) does not match the signed Merkle root and chain head (changed together with any leaf hash kept beside it)",
            header.first_seq,
            end.saturating_sub(1)
        );
        if merkle::root(&self.leaves) != header.merkle_root || self.head != header.chain_head {
            return tampered(Position::Seq(header.first_seq), Reason::Modified, span);
        }
        // A heartbeat batch's time range is its own sealing time.
        let (min_wall, max_wall) = if header.count == 0 {
            (header.wall_ns, header.wall_ns)
        } else {
            self.wall_range
        };
        let verified = VerifiedBatch {
            header: &header,
            record_bytes: self.batch_bytes,
            min_wall,
            max_wall,
        };
        if let Some(failure) = read(rows.source.batch_verified(&verified))? {
            return Err(Stop::Tampered(failure));
        }
        if let Some((epoch, key)) = self.rotation.take() {
            self.key = Some(key);
            self.key_epoch = epoch;
            self.summary.key_rotations += 1;
        }
        self.prev_digest = digest;
        self.next_batch = next_batch;
        self.summary.batches += 1;
        Ok(header)
    }

    fn record<S: BatchSource>(
        &mut self,
        header: &BatchHeader,
        rows: &mut Rows<'_, S>,
    ) -> Result<(), Stop<S::Error>> {
        let seq = self.next_seq;
        let here = Position::Seq(seq);
        let Some(row) = read(rows.next())? else {
            return tampered(here, Reason::Deleted, "the log ends before this record");
        };
        let (leaf, head) = (row.leaf, row.head);
        let rec = &row.record;
        if let Some(stored) = rec.seq.filter(|&s| s > seq) {
            return tampered(
                here,
                Reason::Deleted,
                format!("no record between {seq} and {stored}"),
            );
        }
        if rec.leaf.as_ref().is_some_and(|kept| kept[..] != leaf[..]) {
            // A forged row slid in before the genuine one, which now sits one row later.
            if read(rows.peek_inner_seq())? == Some(seq) {
                return tampered(
                    here,
                    Reason::Inserted,
                    "a forged record occupies this position",
                );
            }
            return tampered(
                here,
                Reason::Modified,
                "record bytes do not match their leaf hash",
            );
        }
        let Ok((inner, tag)) = record::peek(&rec.bytes) else {
            return tampered(here, Reason::Modified, "record does not decode");
        };
        if inner.seq < seq {
            return tampered(
                Position::Seq(inner.seq),
                Reason::Inserted,
                format!("record {} was pushed to position {seq}", inner.seq),
            );
        }
        if inner.seq > seq {
            if read(rows.peek_inner_seq())? == Some(seq) {
                return tampered(
                    here,
                    Reason::Reordered,
                    format!(
                        "holds record {} and the next row holds record {seq}",
                        inner.seq
                    ),
                );
            }
            return tampered(
                here,
                Reason::Deleted,
                format!(
                    "holds record {}: records from {seq} were removed and the rest renumbered",
                    inner.seq
                ),
            );
        }
        if !record::readable(inner.version) {
            return tampered(
                here,
                Reason::Modified,
                format!("unknown format version {}", inner.version),
            );
        }
        if inner.host_id != header.host_id || inner.epoch != header.epoch {
            return tampered(
                here,
                Reason::Modified,
                "record header disagrees with its batch",
            );
        }
        if tag == BODY_TAG_EVENT {
            self.same_epoch(inner.epoch, here)?;
        } else {
            let record = match Record::decode(&rec.bytes) {
                Ok(record) => record,
                Err(e) => {
                    return tampered(
                        here,
                        Reason::Modified,
                        format!("log-internal record does not decode: {e}"),
                    )
                }
            };
            self.internal(&record, here)?;
        }
        rows.source.record_verified(seq, &rec.bytes);
        self.batch_bytes += rec.bytes.len() as u64;
        self.wall_range = (
            self.wall_range.0.min(inner.wall_ns),
            self.wall_range.1.max(inner.wall_ns),
        );
        rows.recycle(row);
        self.head = head;
        self.leaves.push(leaf);
        self.next_seq += 1;
        self.summary.records += 1;
        if self.summary.records == 1 {
            self.summary.first_wall_ns = inner.wall_ns;
        }
        self.summary.last_wall_ns = inner.wall_ns;
        Ok(())
    }

    /// A record that is not an EpochStart must stay in the current epoch.
    fn same_epoch<E>(&mut self, epoch: u64, here: Position) -> Result<(), Stop<E>> {
        match self.epoch {
            Some(e) if e != epoch => tampered(
                here,
                Reason::Modified,
                format!("epoch {epoch} begins without an EpochStart"),
            ),
            Some(_) => Ok(()),
            None if here == Position::Seq(1) => tampered(
                here,
                Reason::Modified,
                "the log does not begin with an EpochStart",
            ),
            None => {
                self.epoch = Some(epoch);
                self.summary.epochs += 1;
                Ok(())
            }
        }
    }

    fn internal<E>(&mut self, record: &Record, here: Position) -> Result<(), Stop<E>> {
        let epoch = record.header.epoch;
        match &record.body {
            Body::EpochStart(start) => {
                let linked = match self.epoch {
                    Some(previous) => {
                        previous.checked_add(1) == Some(epoch)
                            && start.previous_epoch == Some(previous)
                            && start.previous_head == self.head
                            && start.reason != EndReason::First
                    }
                    // The very first record of an unpruned log; after pruning, trust the start.
                    None if record.header.seq == 1 => {
                        start.previous_epoch.is_none()
                            && start.previous_head == GENESIS_HEAD
                            && start.reason == EndReason::First
                    }
                    None => true,
                };
                if !linked {
                    return tampered(
                        here,
                        Reason::Modified,
                        "EpochStart does not link to the previous epoch",
                    );
                }
                self.epoch = Some(epoch);
                self.summary.epochs += 1;
            }
            Body::KeyRotation(rotation) => {
                self.same_epoch(epoch, here)?;
                let invalid = |why: String| {
                    tampered(
                        here,
                        Reason::Modified,
                        format!("invalid key rotation: {why}"),
                    )
                };
                if self.rotation.is_some() {
                    return invalid("a second one in the same batch".to_string());
                }
                if self.key_epoch.checked_add(1) != Some(rotation.key_epoch) {
                    return invalid(format!(
                        "announces key epoch {} in key epoch {}",
                        rotation.key_epoch, self.key_epoch
                    ));
                }
                let Ok(key) = VerifyingKey::from_bytes(&rotation.new_public_key) else {
                    return invalid("the new key is not an Ed25519 public key".to_string());
                };
                self.rotation = Some((rotation.key_epoch, key));
            }
            Body::Pruned(pruned) => {
                self.same_epoch(epoch, here)?;
                if self.summary.pruned_before.is_some()
                    && self.summary.pruned_before == pruned.up_to_seq.checked_add(1)
                {
                    self.pruning_accounted = true;
                }
            }
            Body::Tpm(entry) => {
                self.same_epoch(epoch, here)?;
                self.anchor.entry(record.header.seq, entry);
            }
            Body::Event(_) => self.same_epoch(epoch, here)?,
        }
        Ok(())
    }
}
