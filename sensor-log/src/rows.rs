//! The verifier's stream of records: the source's records in order, each with its leaf hash,
//! and one record of lookahead, which tells an inserted or swapped record from a modified one.
//!
//! Hashing the records is most of a verification's work, and it needs nothing from the walk,
//! so a whole-log `verify` hashes on a second thread: the walk reads chunk `k + 1` from the
//! source and hands it over, then checks chunk `k`, already hashed, while the hasher works.
//! Reading ahead changes nothing the walk decides: the records are the source's second
//! stream, apart from its batches, and a read error (or the source's end) met ahead is kept
//! in its place and returned only when the walk reaches it, so the first failure reported is
//! the same, at the same position, as a walk that reads one record at a time.

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use crate::chain::leaf_hash;
use crate::record::{self, Hash};
use crate::source::{BatchSource, SourceRecord};

/// Records per chunk. With 512, handing chunks over cost more than the overlap saved
/// (docs/performance.md, issue 12).
pub const CHUNK_RECORDS: usize = 4096;
/// A chunk also ends once it holds this many record bytes, so the chunks in flight (three:
/// being read, being hashed, being checked) stay within a few MiB whatever the records.
const CHUNK_BYTES: usize = 4 << 20;

/// A record as the source holds it, and the leaf hash of its bytes.
pub(crate) struct Row {
    pub(crate) record: SourceRecord,
    pub(crate) leaf: Hash,
}

/// How a chunk ended: `None` when the source has more.
type Ending<E> = Option<Result<(), E>>;

/// The hashing thread's side: chunks go out, hashed rows come back, in order.
pub(crate) struct Hasher {
    chunks: SyncSender<Vec<SourceRecord>>,
    hashed: Receiver<Vec<Row>>,
}

impl Hasher {
    /// Starts the hashing thread in `scope`; it ends when the `Hasher` is dropped.
    pub(crate) fn spawn<'scope>(scope: &'scope std::thread::Scope<'scope, '_>) -> Hasher {
        let (chunks, to_hash) = sync_channel::<Vec<SourceRecord>>(1);
        let (done, hashed) = sync_channel(1);
        scope.spawn(move || {
            for chunk in to_hash {
                if done.send(hash(chunk)).is_err() {
                    return;
                }
            }
        });
        Hasher { chunks, hashed }
    }

    fn give(&self, chunk: Vec<SourceRecord>) {
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

fn hash(chunk: Vec<SourceRecord>) -> Vec<Row> {
    chunk
        .into_iter()
        .map(|record| Row {
            leaf: leaf_hash(&record.bytes),
            record,
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
            self.ready.extend(hash(chunk));
            self.after_ready = After::of(end);
            return;
        };
        let end = match self.in_flight.take() {
            Some(end) => end,
            None => {
                let (chunk, end) = self.read_chunk();
                hasher.give(chunk);
                end
            }
        };
        if end.is_none() {
            let (chunk, next_end) = self.read_chunk();
            hasher.give(chunk);
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
