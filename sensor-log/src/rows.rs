//! The verifier's stream of records: the source's records in order, each with its leaf hash,
//! and one record of lookahead, which tells an inserted or swapped record from a modified one.
//!
//! Hashing the records is most of a verification's work, and it needs nothing from the walk
//! but the chain head the log starts from, so a whole-log `verify` hashes on a second thread:
//! the walk reads chunk `k + 1` from the source and hands it over, then checks chunk `k`,
//! already hashed, while the hasher works. The hasher computes each record's leaf and the
//! chain head after it: the walk consumes the rows in order, one per record it accepts, and
//! stops at its first failure, so the heads are those it would have chained itself.
//! Reading ahead changes nothing the walk decides: the records are the source's second
//! stream, apart from its batches, and a read error (or the source's end) met ahead is kept
//! in its place and returned only when the walk reaches it, so the first failure reported is
//! the same, at the same position, as a walk that reads one record at a time.

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use crate::chain::{chain_next, leaf_hash, GENESIS_HEAD};
use crate::record::{self, Hash};
use crate::source::{BatchSource, SourceRecord};

/// Records per chunk. With 512, handing chunks over cost more than the overlap saved
/// (docs/performance.md, issue 12).
pub const CHUNK_RECORDS: usize = 4096;
/// A chunk also ends once it holds this many record bytes, so the chunks in flight (three:
/// being read, being hashed, being checked) stay within a few MiB whatever the records.
const CHUNK_BYTES: usize = 4 << 20;

/// A record as the source holds it, the leaf hash of its bytes, and the chain head after it.
pub(crate) struct Row {
    pub(crate) record: SourceRecord,
    pub(crate) leaf: Hash,
    pub(crate) head: Hash,
}

/// A chunk for the hasher, and the chain head it starts from when the walk set one.
type Chunk = (Vec<SourceRecord>, Option<Hash>);

/// How a chunk ended: `None` when the source has more.
type Ending<E> = Option<Result<(), E>>;

/// The hashing thread's side: chunks go out, hashed rows come back, in order.
pub(crate) struct Hasher {
    chunks: SyncSender<Chunk>,
    hashed: Receiver<Vec<Row>>,
}

impl Hasher {
    /// Starts the hashing thread in `scope`; it ends when the `Hasher` is dropped.
    pub(crate) fn spawn<'scope>(scope: &'scope std::thread::Scope<'scope, '_>) -> Hasher {
        let (chunks, to_hash) = sync_channel::<Chunk>(1);
        let (done, hashed) = sync_channel(1);
        scope.spawn(move || {
            let mut head = GENESIS_HEAD;
            for (chunk, from) in to_hash {
                head = from.unwrap_or(head);
                if done.send(hash(chunk, &mut head)).is_err() {
                    return;
                }
            }
        });
        Hasher { chunks, hashed }
    }

    fn give(&self, chunk: Chunk) {
        // The thread ends only when this Hasher drops, or by a panic, which the scope
        // re-raises when it joins.
        self.chunks
            .send(chunk)
            .expect("the verifier's hashing thread panicked");
    }

    /// The oldest chunk given and not taken, hashed.
    fn take(&self) -> Vec<Row> {
        self.hashed
            .recv()
            .expect("the verifier's hashing thread panicked")
    }
}

/// Each record's leaf and the chain head after it, continuing the chain from `head`.
fn hash(chunk: Vec<SourceRecord>, head: &mut Hash) -> Vec<Row> {
    chunk
        .into_iter()
        .map(|record| {
            let leaf = leaf_hash(&record.bytes);
            *head = chain_next(head, &leaf);
            Row {
                record,
                leaf,
                head: *head,
            }
        })
        .collect()
}

/// What follows the ready rows.
enum After<E> {
    /// More records: the next chunk.
    More,
    /// The source's end, or the error that ended the reading, not yet returned.
    End(Result<(), E>),
    /// The end was returned: every later read is `None`.
    Ended,
}

impl<E> After<E> {
    fn of(ending: Ending<E>) -> After<E> {
        ending.map_or(After::More, After::End)
    }
}

pub(crate) struct Rows<'s, S: BatchSource> {
    pub(crate) source: &'s mut S,
    hasher: Option<Hasher>,
    /// The chain head the records start from, until the first chunk takes it.
    chain_from: Option<Hash>,
    /// The chain head after the last record hashed on this thread.
    head: Hash,
    /// How the chunk with the hasher ended, while it is there.
    in_flight: Option<Ending<S::Error>>,
    /// Hashed rows the walk has not reached, then what follows them.
    ready: VecDeque<Row>,
    after_ready: After<S::Error>,
    peeked: Option<Option<Row>>,
    /// Consumed records whose buffers the next reads reuse (no allocation per record).
    spare: Vec<SourceRecord>,
}

impl<'s, S: BatchSource> Rows<'s, S> {
    /// Hashes on this thread (one batch of a forwarding message).
    pub(crate) fn new(source: &'s mut S) -> Rows<'s, S> {
        Rows {
            source,
            hasher: None,
            chain_from: None,
            head: GENESIS_HEAD,
            in_flight: None,
            ready: VecDeque::new(),
            after_ready: After::More,
            peeked: None,
            spare: Vec::new(),
        }
    }

    /// Hashes on `hasher`'s thread, one chunk ahead of the walk.
    pub(crate) fn with_hasher(source: &'s mut S, hasher: Hasher) -> Rows<'s, S> {
        Rows {
            hasher: Some(hasher),
            ..Rows::new(source)
        }
    }

    /// The chain head before the first record: set before reading any.
    pub(crate) fn chain_from(&mut self, head: Hash) {
        debug_assert!(self.ready.is_empty() && self.in_flight.is_none() && self.spare.is_empty());
        self.chain_from = Some(head);
    }

    /// Reads up to a chunk of records, and how the reading ended if it did.
    fn read_chunk(&mut self) -> (Vec<SourceRecord>, Ending<S::Error>) {
        // Grown as read: a forwarding message's batch is far smaller than a chunk.
        let mut chunk = Vec::new();
        let mut bytes = 0;
        while chunk.len() < CHUNK_RECORDS && bytes < CHUNK_BYTES {
            let mut record = self.spare.pop().unwrap_or_default();
            match self.source.next_record(&mut record) {
                Ok(true) => {
                    bytes += record.bytes.len();
                    chunk.push(record);
                }
                Ok(false) => return (chunk, Some(Ok(()))),
                Err(e) => return (chunk, Some(Err(e))),
            }
        }
        (chunk, None)
    }

    /// Makes the next hashed chunk ready and, while the source goes on, hands the one after
    /// it to the hasher.
    fn advance(&mut self) {
        let Some(hasher) = self.hasher.take() else {
            let (chunk, end) = self.read_chunk();
            self.head = self.chain_from.take().unwrap_or(self.head);
            self.ready.extend(hash(chunk, &mut self.head));
            self.after_ready = After::of(end);
            return;
        };
        let end = match self.in_flight.take() {
            Some(end) => end,
            None => {
                let (chunk, end) = self.read_chunk();
                hasher.give((chunk, self.chain_from.take()));
                end
            }
        };
        if end.is_none() {
            let (chunk, next_end) = self.read_chunk();
            hasher.give((chunk, None));
            self.in_flight = Some(next_end);
        }
        self.ready.extend(hasher.take());
        self.after_ready = After::of(end);
        self.hasher = Some(hasher);
    }

    fn read(&mut self) -> Result<Option<Row>, S::Error> {
        loop {
            if let Some(row) = self.ready.pop_front() {
                return Ok(Some(row));
            }
            match std::mem::replace(&mut self.after_ready, After::Ended) {
                After::More => self.advance(),
                After::End(end) => return end.map(|()| None),
                After::Ended => return Ok(None),
            }
        }
    }

    pub(crate) fn recycle(&mut self, row: Row) {
        self.spare.push(row.record);
    }

    pub(crate) fn next(&mut self) -> Result<Option<Row>, S::Error> {
        match self.peeked.take() {
            Some(row) => Ok(row),
            None => self.read(),
        }
    }

    /// The sequence number encoded inside the next record, if it decodes.
    pub(crate) fn peek_inner_seq(&mut self) -> Result<Option<u64>, S::Error> {
        if self.peeked.is_none() {
            self.peeked = Some(self.read()?);
        }
        Ok(self
            .peeked
            .as_ref()
            .and_then(Option::as_ref)
            .and_then(|r| record::peek(&r.record.bytes).ok())
            .map(|(h, _)| h.seq))
    }
}
