//! The writer the agent calls: chains records, seals signed batches, stores them durably.
//!
//! Durability rule: a batch, its records and its signed header are committed in ONE SQLite
//! transaction (WAL, `synchronous=FULL`) before `seal` returns it, so anything downstream
//! (TPM anchor, forwarding) only ever sees batches that are already on disk. Records appended
//! but not yet sealed live only in memory: a crash loses at most one batch interval of them,
//! and the next start says so with an `EpochStart` whose reason is `Crash`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use rusqlite::params;

use crate::block::{self, Compressor};
use crate::error::{Error, Result};
use crate::index::{Dictionary, RecordTerms};
use crate::keys::{self, KeyDir};
use crate::store::{self, to_i64, Store};
use sensor_log::batch::{self, Anchor, BatchHeader, BatchSealer, SealedBatch, BATCH_VERSION};
use sensor_log::chain::{chain_next, leaf_hash, GENESIS_HEAD};
use sensor_log::event::Event;
use sensor_log::hex;
use sensor_log::record::{
    Body, EndReason, EpochStart, Hash, HostId, KeyRotation, Pruned, Record, RecordHeader, TpmEntry,
    FORMAT_VERSION,
};
use sensor_log::time::{duration_ns, Timestamp};

pub const HOST_ID_FILE: &str = "host-id";

#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// Close a batch after this many records (default 1024).
    pub batch_max_records: usize,
    /// Close a batch, empty or not, after this long (default 1 s).
    pub batch_interval: Duration,
    /// Rotate the signing key this often; `None` never rotates.
    pub key_rotation: Option<Duration>,
    /// The first rotation after `open`, sooner than `key_rotation`: the key found on disk at
    /// start may have been copied while the agent was stopped (or pinned at install), so it
    /// is destroyed within minutes. `None`: `key_rotation` applies to the first one too.
    pub first_key_rotation: Option<Duration>,
    /// Records kept in memory while sealing fails (disk full); beyond it events are counted,
    /// not chained, and reported by a `loss` event (source `disk_full`) once sealing works.
    pub max_pending_records: usize,
    /// Where the kernel publishes the boot id (a setting so tests can simulate a reboot).
    pub boot_id_path: PathBuf,
}

impl Default for WriterOptions {
    fn default() -> WriterOptions {
        WriterOptions {
            batch_max_records: 1024,
            batch_interval: Duration::from_secs(1),
            key_rotation: None,
            first_key_rotation: None,
            max_pending_records: 100_000,
            boot_id_path: PathBuf::from("/proc/sys/kernel/random/boot_id"),
        }
    }
}

/// What `append` did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Chained with this sequence number; durable once its batch is sealed.
    Chained(u64),
    /// Not chained because sealing is failing and the buffer is full; counted for the
    /// `disk_full` loss event.
    Dropped,
}

/// A chained record waiting for its batch to be committed.
struct Pending {
    header: RecordHeader,
    terms: RecordTerms,
    head_after: Hash,
    /// Where its block entry (leaf, length, bytes) is in `LogWriter::entries`.
    entry: std::ops::Range<usize>,
}

impl Pending {
    fn leaf(&self, entries: &[u8]) -> Hash {
        block::entry_leaf(entries, self.entry.start)
    }

    fn record_len(&self) -> usize {
        self.entry.len() - block::ENTRY_HEADER
    }
}

/// Free pages given back to the file system at most per call of `give_back_free_pages`
/// (64 MiB of 16 KiB pages): the chain stage waits for it, so what a large prune frees
/// beyond this goes back at the next calls, a minute apart (docs/performance.md).
const PRUNE_FREED_PAGES: u32 = 4096;

/// Above this capacity, the buffer of pending entries is given back after a commit (it grew
/// while sealing failed).
const ENTRIES_KEPT: usize = 16 << 20;

/// Store changes that must commit atomically with the pending records (and are retried
/// with them when a commit fails).
enum Effect {
    AddKey {
        key_epoch: u64,
        public_key: [u8; 32],
        created_ns: u64,
    },
    Prune {
        up_to_seq: u64,
        up_to_batch: u64,
    },
    Meta {
        name: &'static str,
        value: Vec<u8>,
    },
    ClearCleanStop,
    MarkCleanStop,
}

/// The durable end of the chain: what the last committed batch says.
struct Durable {
    next_batch: u64,
    prev_digest: Hash,
    head: Hash,
}

pub struct LogWriter {
    store: Store,
    keys: KeyDir,
    options: WriterOptions,
    host_id: HostId,
    epoch: u64,
    signing: SigningKey,
    key_epoch: u64,
    /// `CLOCK_MONOTONIC` time the rotation schedule counts from: the writer's own clock,
    /// never the key's creation time in the store, which root can edit to postpone rotation.
    key_since_mono_ns: u64,
    /// Rotations done since `open`.
    rotations: u64,
    /// A new key announced by a pending `KeyRotation` record, in use once that commits.
    next_key: Option<(u64, SigningKey)>,
    next_seq: u64,
    head: Hash,
    durable: Durable,
    pending: Vec<Pending>,
    effects: Vec<Effect>,
    sealer: BatchSealer,
    dropped: BTreeMap<String, u64>,
    /// Query terms seen so far and their ids in the store.
    dictionary: Dictionary,
    /// The pending records, encoded straight into block entries (`block.rs`), in order: a
    /// block is compressed from a slice of it, with no copy and no allocation per record.
    entries: Vec<u8>,
    compressor: Compressor,
    /// Records moved from a store of layout 2 by `open`, if it migrated one.
    migrated: Option<u64>,
    /// Put in every header sealed from now on (`set_anchor`).
    anchor: Option<Anchor>,
}

impl LogWriter {
    /// Opens (or creates) the log in `state_dir` and starts a new epoch: its `EpochStart`
    /// record is sealed before this returns.
    pub fn open(state_dir: &Path, options: WriterOptions) -> Result<LogWriter> {
        let now = Timestamp::now();
        DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(state_dir)
            .map_err(Error::io(state_dir))?;
        let host_id = load_or_create_host_id(state_dir)?;
        let (store, migrated) = Store::open_writable(state_dir)?;
        if let Some(stored) = store.meta(store::META_HOST_ID)? {
            if stored != host_id {
                return Err(Error::HostMismatch {
                    dir: state_dir.to_path_buf(),
                    store: hex::encode(&stored),
                    file: hex::encode(host_id),
                });
            }
        }
        let mut effects = vec![Effect::Meta {
            name: store::META_HOST_ID,
            value: host_id.to_vec(),
        }];

        // Keep only the key the store announces; any other file is a superseded key whose
        // deletion was interrupted, or a new key whose announcement never committed.
        let keys = KeyDir::open(state_dir)?;
        let current = store.current_key()?;
        for epoch in keys.present()? {
            if current.as_ref().map(|c| c.key_epoch) != Some(epoch) {
                keys.destroy(epoch)?;
            }
        }
        let (key_epoch, signing) = match current {
            Some(info) => {
                let signing = keys.load(info.key_epoch)?;
                if signing.verifying_key() != info.public_key {
                    return Err(Error::Key(format!(
                        "key file for key epoch {} does not match the store",
                        info.key_epoch
                    )));
                }
                (info.key_epoch, signing)
            }
            None => {
                let signing = keys.create(1)?;
                effects.push(Effect::AddKey {
                    key_epoch: 1,
                    public_key: signing.verifying_key().to_bytes(),
                    created_ns: now.wall_ns,
                });
                (1, signing)
            }
        };

        let last = store.last_batch()?;
        let (previous_epoch, durable, next_seq) = match &last {
            Some(b) => (
                Some(b.header.epoch),
                Durable {
                    next_batch: b.number + 1,
                    prev_digest: batch::digest(&b.header_bytes),
                    head: b.header.chain_head,
                },
                b.header.first_seq + b.header.count,
            ),
            None => (
                None,
                Durable {
                    next_batch: 1,
                    prev_digest: [0; 32],
                    head: GENESIS_HEAD,
                },
                1,
            ),
        };
        let boot_id = fs::read_to_string(&options.boot_id_path)
            .map_err(Error::io(&options.boot_id_path))?
            .trim()
            .to_string();
        let reason = if previous_epoch.is_none() {
            EndReason::First
        } else if store
            .meta(store::META_BOOT_ID)?
            .is_some_and(|b| b != boot_id.as_bytes())
        {
            EndReason::Reboot
        } else if store
            .meta(store::META_CLEAN_STOP)?
            .is_some_and(|d| d == durable.prev_digest)
        {
            EndReason::CleanStop
        } else {
            EndReason::Crash
        };
        effects.push(Effect::Meta {
            name: store::META_BOOT_ID,
            value: boot_id.clone().into_bytes(),
        });
        effects.push(Effect::ClearCleanStop);

        let mut writer = LogWriter {
            sealer: BatchSealer::new(
                options.batch_max_records,
                duration_ns(options.batch_interval),
                now.mono_ns,
            ),
            store,
            keys,
            options,
            host_id,
            epoch: previous_epoch.map_or(1, |e| e + 1),
            signing,
            key_epoch,
            key_since_mono_ns: now.mono_ns,
            rotations: 0,
            next_key: None,
            next_seq,
            head: durable.head,
            durable,
            pending: Vec::new(),
            effects,
            dropped: BTreeMap::new(),
            dictionary: Dictionary::default(),
            entries: Vec::new(),
            compressor: Compressor::new()?,
            migrated,
            anchor: None,
        };
        let start = EpochStart {
            previous_epoch,
            previous_head: writer.head,
            reason,
            boot_id,
        };
        writer.chain(Body::EpochStart(start), now)?;
        writer.seal(now)?;
        Ok(writer)
    }

    /// Chains an event. It becomes durable when its batch is sealed (`seal_due`/`seal`).
    pub fn append(&mut self, event: Event, wall_ns: u64, mono_ns: u64) -> Result<Admission> {
        if self.pending.len() >= self.options.max_pending_records {
            *self
                .dropped
                .entry(event.kind.as_str().to_string())
                .or_default() += 1;
            return Ok(Admission::Dropped);
        }
        let seq = self.chain(Body::Event(event), Timestamp { wall_ns, mono_ns })?;
        Ok(Admission::Chained(seq))
    }

    /// Chains a `loss` event for events lost before they reached the log (kernel ring
    /// buffer, agent queues), so the loss is part of the verifiable history.
    pub fn record_loss(
        &mut self,
        source: &str,
        counts: BTreeMap<String, u64>,
        at: Timestamp,
    ) -> Result<Admission> {
        self.append(
            Event::loss(source, counts, at.wall_ns),
            at.wall_ns,
            at.mono_ns,
        )
    }

    /// Seals when a batch is due: `batch_max_records` pending, or `batch_interval` since the
    /// last batch (an empty heartbeat batch when idle). Also rotates the key when due. Call it
    /// after appending and at least every `batch_interval`.
    pub fn seal_due(&mut self, now: Timestamp) -> Result<Vec<SealedBatch>> {
        let period = match self.rotations {
            0 => self
                .options
                .first_key_rotation
                .or(self.options.key_rotation),
            _ => self.options.key_rotation,
        };
        let rotation_due = self.options.key_rotation.is_some()
            && period.is_some_and(|p| {
                now.mono_ns.saturating_sub(self.key_since_mono_ns) >= duration_ns(p)
            });
        if rotation_due && self.next_key.is_none() {
            self.begin_rotation(now)?;
            return self.seal(now);
        }
        if self.sealer.due(self.pending.len(), now.mono_ns) {
            return self.seal(now);
        }
        Ok(Vec::new())
    }

    /// Seals every pending record now (at least one batch: an empty one when nothing is
    /// pending), in one transaction. Returns the sealed batches, already durable. On error
    /// (e.g. SQLITE_FULL) nothing is lost: the records stay pending and the next call retries.
    pub fn seal(&mut self, now: Timestamp) -> Result<Vec<SealedBatch>> {
        let result = self.commit(now);
        self.sealer.attempted(now.mono_ns, result.is_ok());
        let sealed = result?;
        if let Some((key_epoch, key)) = self.next_key.take() {
            // The old key signed its last batch (the one announcing the new key): destroy it.
            self.signing = key;
            self.keys.destroy(self.key_epoch)?;
            self.key_epoch = key_epoch;
            self.key_since_mono_ns = now.mono_ns;
            self.rotations += 1;
        }
        if !self.dropped.is_empty() {
            let counts = std::mem::take(&mut self.dropped);
            self.chain(
                Body::Event(Event::loss("disk_full", counts, now.wall_ns)),
                now,
            )?;
        }
        Ok(sealed)
    }

    /// Retention: removes whole batches from the oldest end while the stored record bytes
    /// exceed `max_bytes` or a batch is older than `max_age`, never the newest batch. A
    /// `Pruned` record saying what went is chained and committed in the same transaction as
    /// the deletion, so nothing disappears silently. Returns what was removed, if anything.
    ///
    /// `keep_from` is the first batch no collector has acknowledged (forwarding on): age
    /// never removes it or a later batch; the byte limit still may (the disk comes first),
    /// and then a `loss` event (source `unforwarded`, counts by kind) is chained right after
    /// the `Pruned` record, in the same batch, for the records removed before any collector
    /// held them.
    pub fn prune(
        &mut self,
        max_bytes: Option<u64>,
        max_age: Option<Duration>,
        keep_from: Option<u64>,
        now: Timestamp,
    ) -> Result<Option<Pruned>> {
        if self
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Prune { .. }))
        {
            // A previous prune has not committed yet; it will with the next seal.
            return Ok(None);
        }
        let mut batches = Vec::new();
        {
            let mut stmt = self.store.conn.prepare(
                "SELECT number, first_seq, count, bytes, wall_ns FROM batches ORDER BY number",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let get = |i: usize, what| -> Result<u64> { store::to_u64(r.get(i)?, what) };
                batches.push([
                    get(0, "batch number")?,
                    get(1, "first seq")?,
                    get(2, "count")?,
                    get(3, "bytes")?,
                    get(4, "wall time")?,
                ]);
            }
        }
        let cutoff = max_age.map(|age| now.wall_ns.saturating_sub(duration_ns(age)));
        let mut total: u64 = batches.iter().map(|b| b[3]).sum();
        let mut removed = 0;
        let mut records = 0;
        let mut unforwarded = None;
        for &[number, _, count, bytes, wall_ns] in
            batches.iter().take(batches.len().saturating_sub(1))
        {
            let held_elsewhere = keep_from.is_none_or(|keep| number < keep);
            let too_big = max_bytes.is_some_and(|max| total > max);
            let too_old = held_elsewhere && cutoff.is_some_and(|c| wall_ns < c);
            if !(too_big || too_old) {
                break;
            }
            if !held_elsewhere {
                unforwarded.get_or_insert((number, number)).1 = number;
            }
            total -= bytes;
            records += count;
            removed += 1;
        }
        if removed == 0 {
            return Ok(None);
        }
        let [up_to_batch, ..] = batches[removed - 1];
        let [_, retained_first_seq, ..] = batches[removed];
        let pruned = Pruned {
            up_to_seq: retained_first_seq - 1,
            records,
            batches: u64::try_from(removed).unwrap_or(u64::MAX),
        };
        self.effects.push(Effect::Prune {
            up_to_seq: pruned.up_to_seq,
            up_to_batch,
        });
        self.chain(Body::Pruned(pruned.clone()), now)?;
        if let Some((first, last)) = unforwarded {
            let counts = self.store.kinds_in_batches(first, last)?;
            self.chain(
                Body::Event(Event::loss("unforwarded", counts, now.wall_ns)),
                now,
            )?;
        }
        self.seal(now)?;
        Ok(Some(pruned))
    }

    /// Returns up to `PRUNE_FREED_PAGES` of the pages pruning freed to the file system, so
    /// the file shrinks with the log. Apart from `prune`, so that a failure here (a full
    /// disk has no room to move pages) neither hides a prune that happened nor stops the
    /// next one; the free pages are reused by new blocks meanwhile.
    pub fn give_back_free_pages(&self) -> Result<()> {
        store::give_back_free_pages(&self.store.conn, Some(PRUNE_FREED_PAGES))
    }

    /// Seals what is pending and writes the clean-stop marker in the same transaction, so the
    /// next start can tell a clean stop from a crash. Returns the last batches (durable), so
    /// they can still be anchored.
    pub fn close(mut self, now: Timestamp) -> Result<Vec<SealedBatch>> {
        self.effects.push(Effect::MarkCleanStop);
        self.seal(now)
    }

    /// The TPM anchor to record in the headers sealed from now on (`None`: not anchored).
    pub fn set_anchor(&mut self, anchor: Option<Anchor>) {
        self.anchor = anchor;
    }

    /// Chains a TPM anchoring entry; durable with the next seal.
    pub fn record_tpm(&mut self, entry: TpmEntry, at: Timestamp) -> Result<u64> {
        self.chain(Body::Tpm(entry), at)
    }

    /// Records `open` moved from a store of layout 2, if it migrated one.
    pub fn migrated(&self) -> Option<u64> {
        self.migrated
    }

    /// Number of the next batch to be sealed.
    pub fn next_batch(&self) -> u64 {
        self.durable.next_batch
    }

    /// The host every record of this log names (`state_dir/host-id`).
    pub fn host_id(&self) -> HostId {
        self.host_id
    }

    /// Records chained but not yet sealed.
    pub fn pending_records(&self) -> usize {
        self.pending.len()
    }

    /// Events counted instead of chained since sealing started failing.
    pub fn dropped(&self) -> &BTreeMap<String, u64> {
        &self.dropped
    }

    /// The current signing key's epoch and public key.
    pub fn public_key(&self) -> (u64, [u8; 32]) {
        (self.key_epoch, self.signing.verifying_key().to_bytes())
    }

    fn chain(&mut self, body: Body, at: Timestamp) -> Result<u64> {
        let record = Record {
            header: RecordHeader {
                version: FORMAT_VERSION,
                host_id: self.host_id,
                epoch: self.epoch,
                seq: self.next_seq,
                wall_ns: at.wall_ns,
                mono_ns: at.mono_ns,
            },
            body,
        };
        let start = block::begin_entry(&mut self.entries);
        if let Err(e) = record.encode_into(&mut self.entries) {
            self.entries.truncate(start);
            return Err(e.into());
        }
        let leaf = leaf_hash(&self.entries[start + block::ENTRY_HEADER..]);
        block::end_entry(&mut self.entries, start, &leaf)?;
        self.head = chain_next(&self.head, &leaf);
        self.pending.push(Pending {
            header: record.header,
            terms: self.dictionary.terms_of(&record.body),
            head_after: self.head,
            entry: start..self.entries.len(),
        });
        self.next_seq += 1;
        Ok(record.header.seq)
    }

    fn begin_rotation(&mut self, now: Timestamp) -> Result<()> {
        let key_epoch = self.key_epoch + 1;
        let key = self.keys.create(key_epoch)?;
        let public_key = key.verifying_key().to_bytes();
        self.chain(
            Body::KeyRotation(KeyRotation {
                new_public_key: public_key,
                key_epoch,
            }),
            now,
        )?;
        self.effects.push(Effect::AddKey {
            key_epoch,
            public_key,
            created_ns: now.wall_ns,
        });
        self.next_key = Some((key_epoch, key));
        Ok(())
    }

    /// Writes all pending records as batches of at most `batch_max_records`, with their
    /// signed headers and the pending effects, in one transaction.
    fn commit(&mut self, now: Timestamp) -> Result<Vec<SealedBatch>> {
        let chunk = self.sealer.max_records;
        let mut sealed = Vec::with_capacity(self.pending.len() / chunk + 1);
        let mut prev_digest = self.durable.prev_digest;
        let mut prev_head = self.durable.head;
        let mut first_seq = self.pending.first().map_or(self.next_seq, |p| p.header.seq);
        let chunks: Vec<&[Pending]> = if self.pending.is_empty() {
            vec![&[]]
        } else {
            self.pending.chunks(chunk).collect()
        };
        let mut staged = HashMap::new();
        let tx = self.store.conn.transaction()?;
        let mut leaves: Vec<Hash> = Vec::with_capacity(chunk.min(self.pending.len()));
        for (i, records) in chunks.into_iter().enumerate() {
            leaves.clear();
            leaves.extend(records.iter().map(|p| p.leaf(&self.entries)));
            let chain_head = records.last().map_or(prev_head, |p| p.head_after);
            let count = u64::try_from(records.len()).unwrap_or(u64::MAX);
            let header = BatchHeader {
                version: BATCH_VERSION,
                host_id: self.host_id,
                epoch: self.epoch,
                number: self.durable.next_batch + u64::try_from(i).unwrap_or(u64::MAX),
                first_seq,
                count,
                merkle_root: sensor_log::merkle::root(&leaves),
                prev_digest,
                prev_head,
                chain_head,
                key_epoch: self.key_epoch,
                wall_ns: now.wall_ns,
                anchor: self.anchor,
            };
            let batch = header.seal(&self.signing)?;
            let number = to_i64(batch.header.number)?;
            let mut wall_range = (u64::MAX, 0);
            let mut bytes = 0u64;
            {
                let mut insert =
                    tx.prepare_cached("INSERT INTO blocks (first_seq, data) VALUES (?1, ?2)")?;
                let entries = &self.entries;
                let compressor = &mut self.compressor;
                let mut write_block = |part: &[Pending]| -> Result<()> {
                    let (Some(first), Some(last)) = (part.first(), part.last()) else {
                        return Ok(());
                    };
                    let data = compressor.compress(&entries[first.entry.start..last.entry.end])?;
                    insert.execute(params![to_i64(first.header.seq)?, data])?;
                    Ok(())
                };
                let (mut begun, mut plain) = (0, 0);
                for (i, p) in records.iter().enumerate() {
                    wall_range.0 = wall_range.0.min(p.header.wall_ns);
                    wall_range.1 = wall_range.1.max(p.header.wall_ns);
                    bytes += p.record_len() as u64;
                    if !block::fits(i - begun, plain, p.record_len()) {
                        write_block(&records[begun..i])?;
                        (begun, plain) = (i, 0);
                    }
                    plain += p.entry.len();
                }
                write_block(&records[begun..])?;
            }
            if records.is_empty() {
                wall_range = (now.wall_ns, now.wall_ns);
            }
            self.dictionary.write_postings(
                &tx,
                number,
                records.iter().map(|p| &p.terms),
                &mut staged,
            )?;
            Store::insert_batch(&tx, &batch, bytes, wall_range)?;
            prev_digest = batch.digest;
            prev_head = chain_head;
            first_seq += count;
            sealed.push(batch);
        }
        for effect in &self.effects {
            match effect {
                Effect::AddKey {
                    key_epoch,
                    public_key,
                    created_ns,
                } => {
                    tx.execute(
                        "INSERT OR REPLACE INTO keys (key_epoch, public_key, created_ns) VALUES (?1, ?2, ?3)",
                        params![to_i64(*key_epoch)?, &public_key[..], to_i64(*created_ns)?],
                    )?;
                }
                Effect::Prune {
                    up_to_seq,
                    up_to_batch,
                } => {
                    tx.execute(
                        "DELETE FROM blocks WHERE first_seq <= ?1",
                        [to_i64(*up_to_seq)?],
                    )?;
                    tx.execute(
                        "DELETE FROM postings WHERE batch <= ?1",
                        [to_i64(*up_to_batch)?],
                    )?;
                    tx.execute(
                        "DELETE FROM batches WHERE number <= ?1",
                        [to_i64(*up_to_batch)?],
                    )?;
                }
                Effect::Meta { name, value } => Store::set_meta(&tx, name, value)?,
                Effect::ClearCleanStop => {
                    tx.execute("DELETE FROM meta WHERE name = ?1", [store::META_CLEAN_STOP])?;
                }
                Effect::MarkCleanStop => {
                    Store::set_meta(&tx, store::META_CLEAN_STOP, &prev_digest)?
                }
            }
        }
        tx.commit()?;
        self.durable = Durable {
            next_batch: self.durable.next_batch + sealed.len() as u64,
            prev_digest,
            head: prev_head,
        };
        self.dictionary.committed(staged);
        self.pending.clear();
        self.entries.clear();
        if self.entries.capacity() > ENTRIES_KEPT {
            self.entries = Vec::new();
        }
        self.effects.clear();
        self.dictionary.trim();
        Ok(sealed)
    }
}

/// The host id is created once (16 random bytes, stored as hex) and never changes, so
/// records from a copied or restored state directory still name the host they came from.
fn load_or_create_host_id(state_dir: &Path) -> Result<HostId> {
    let path = state_dir.join(HOST_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(hex::decode_array::<16>(&text, "host-id")?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = keys::random::<16>()?;
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)
                .map_err(Error::io(&path))?;
            file.write_all(format!("{}\n", hex::encode(id)).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(Error::io(&path))?;
            Ok(id)
        }
        Err(e) => Err(Error::io(&path)(e)),
    }
}
