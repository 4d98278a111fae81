//! Record blocks (store layout 3): the records of a batch kept as compressed blocks, one
//! `blocks` row per block, instead of one `records` row per record.
//!
//! Per-record rows cost the durable write two copies of every record (WAL, then checkpoint)
//! plus SQLite's work per row, and ~550 bytes of disk per record; a block is one row per
//! `MAX_RECORDS` records of a batch, and records alike in most of their fields compress to a
//! tenth (docs/performance.md, issue 12).
//!
//! A block's plain bytes are its records in sequence order, each as an entry:
//!
//! ```text
//! leaf (32 bytes) ‖ length (u32, little-endian) ‖ record (length bytes)
//! ```
//!
//! compressed as one zstd frame. The record bytes are the signed bytes, unchanged; the leaf
//! is the unsigned copy of their leaf hash that lets `verify` name a modified record (as the
//! `records.leaf` column did). A block holds at most `MAX_RECORDS` records and
//! `MAX_PLAIN_BYTES` plain bytes (a record alone may fill it: records are at most 1 MiB), so
//! reading one never allocates more than that, and a query's point read decompresses at
//! most one block.

use sensor_log::record::{Hash, MAX_ENCODED_BYTES};

use crate::error::{Error, Result};

/// Records per block at most. A query's point read decompresses a whole block: 128 records
/// (about 64 KiB plain) made scattered answers three times faster than 1024 for about a
/// fifth more disk (docs/performance.md, issue 12).
pub const MAX_RECORDS: usize = 128;
/// Plain (decompressed) bytes per block at most.
pub const MAX_PLAIN_BYTES: usize = 4 << 20;
/// Stored (compressed) bytes per block at most: zstd's bound for `MAX_PLAIN_BYTES`, rounded
/// up. A longer value in the store is damage and is not loaded.
pub const MAX_STORED_BYTES: usize = MAX_PLAIN_BYTES + (64 << 10);
/// Bytes of an entry before its record: the leaf and the length.
pub const ENTRY_HEADER: usize = 32 + 4;
/// zstd level: 1 is the fastest; higher levels cost the durable write more than they save
/// (docs/performance.md, issue 12).
const LEVEL: i32 = 1;

/// Whether a record of `len` bytes may join a block of `count` entries and `plain` plain
/// bytes (an empty block takes any record the format allows).
pub fn fits(count: usize, plain: usize, len: usize) -> bool {
    count == 0 || (count < MAX_RECORDS && plain + ENTRY_HEADER + len <= MAX_PLAIN_BYTES)
}

/// Starts an entry at the end of `plain`: room for its leaf and length, which `end_entry`
/// fills once the record's bytes follow. Returns where the entry starts.
pub fn begin_entry(plain: &mut Vec<u8>) -> usize {
    let start = plain.len();
    plain.extend_from_slice(&[0; ENTRY_HEADER]);
    start
}

/// Fills the leaf and length of the entry begun at `start`, whose record is the rest of
/// `plain`; a record longer than the format allows is an error (and `plain` is left as it
/// was before `begin_entry`).
pub fn end_entry(plain: &mut Vec<u8>, start: usize, leaf: &Hash) -> Result<()> {
    let len = plain.len() - start - ENTRY_HEADER;
    let Some(len) = u32::try_from(len)
        .ok()
        .filter(|&l| l as usize <= MAX_ENCODED_BYTES)
    else {
        plain.truncate(start);
        return Err(Error::malformed("record", "longer than the format allows"));
    };
    plain[start..start + 32].copy_from_slice(leaf);
    plain[start + 32..start + ENTRY_HEADER].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// The leaf `end_entry` wrote into the entry begun at `start`.
pub fn entry_leaf(plain: &[u8], start: usize) -> Hash {
    let mut leaf = [0; 32];
    leaf.copy_from_slice(&plain[start..start + 32]);
    leaf
}

/// Compresses plain block bytes (entries laid out by `begin_entry` and `end_entry`) into a
/// block's stored bytes. Reused: the compression context is kept.
pub struct Compressor(zstd::bulk::Compressor<'static>);

impl Compressor {
    pub fn new() -> Result<Compressor> {
        Ok(Compressor(
            zstd::bulk::Compressor::new(LEVEL).map_err(compression)?,
        ))
    }

    pub fn compress(&mut self, plain: &[u8]) -> Result<Vec<u8>> {
        self.0.compress(plain).map_err(compression)
    }
}

/// Builds blocks one record at a time (the migration, tests). Reused: the plain buffer and
/// the compression context are kept.
pub struct BlockEncoder {
    plain: Vec<u8>,
    count: usize,
    compressor: Compressor,
}

impl BlockEncoder {
    pub fn new() -> Result<BlockEncoder> {
        Ok(BlockEncoder {
            plain: Vec::new(),
            count: 0,
            compressor: Compressor::new()?,
        })
    }

    /// Whether a record of `len` bytes may join the block being built.
    pub fn fits(&self, len: usize) -> bool {
        fits(self.count, self.plain.len(), len)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Drops the records pushed since the last `finish`.
    pub fn clear(&mut self) {
        self.plain.clear();
        self.count = 0;
    }

    /// Adds a record; one that does not `fit` is an error.
    pub fn push(&mut self, leaf: &Hash, record: &[u8]) -> Result<()> {
        if !self.fits(record.len()) {
            return Err(Error::malformed("record block", "full"));
        }
        let start = begin_entry(&mut self.plain);
        self.plain.extend_from_slice(record);
        end_entry(&mut self.plain, start, leaf)?;
        self.count += 1;
        Ok(())
    }

    /// The block's stored bytes; the encoder is empty again.
    pub fn finish(&mut self) -> Result<Vec<u8>> {
        let stored = self.compressor.compress(&self.plain)?;
        self.plain.clear();
        self.count = 0;
        Ok(stored)
    }
}

fn compression(e: std::io::Error) -> Error {
    Error::malformed("record block", format!("compression failed: {e}"))
}

/// One decoded block: the entries found, and what is wrong after the last of them, if
/// anything. Reused between blocks: the buffers are kept.
pub struct Block {
    plain: Vec<u8>,
    /// Start of each entry's record in `plain`, and its length.
    entries: Vec<(usize, usize)>,
    damage: Option<String>,
    decompressor: zstd::bulk::Decompressor<'static>,
}

impl Block {
    pub fn new() -> Result<Block> {
        Ok(Block {
            plain: Vec::new(),
            entries: Vec::new(),
            damage: None,
            decompressor: zstd::bulk::Decompressor::new().map_err(compression)?,
        })
    }

    /// Decodes `stored`. Never fails: a block that does not decompress, or whose entries end
    /// short, keeps the entries before the damage and says what it is (`damage`).
    pub fn decode(&mut self, stored: &[u8]) -> &mut Block {
        self.entries.clear();
        self.damage = None;
        self.plain.clear();
        if stored.len() > MAX_STORED_BYTES {
            self.damage = Some(format!(
                "{} stored bytes, more than a block holds",
                stored.len()
            ));
            return self;
        }
        // The writer's frames say their plain size; room for the limit otherwise.
        let size = match zstd::zstd_safe::get_frame_content_size(stored) {
            Ok(Some(size)) if size > MAX_PLAIN_BYTES as u64 => {
                self.damage = Some(format!("{size} plain bytes, more than a block holds"));
                return self;
            }
            Ok(Some(size)) => size as usize,
            _ => MAX_PLAIN_BYTES,
        };
        self.plain.reserve_exact(size);
        // Writes into `plain`'s spare capacity and fails, without writing past it, on a
        // frame that decompresses to more than that.
        match self
            .decompressor
            .decompress_to_buffer(stored, &mut self.plain)
        {
            Ok(n) if n <= MAX_PLAIN_BYTES => {}
            Ok(n) => {
                self.plain.clear();
                self.damage = Some(format!("{n} plain bytes, more than a block holds"));
                return self;
            }
            Err(e) => {
                self.plain.clear();
                self.damage = Some(format!("does not decompress ({e})"));
                return self;
            }
        }
        let mut at = 0;
        while at < self.plain.len() {
            let Some(len) = self
                .plain
                .get(at + 32..at + ENTRY_HEADER)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(|b| u32::from_le_bytes(b) as usize)
            else {
                self.damage = Some(format!("entry {} is cut short", self.entries.len()));
                break;
            };
            let start = at + ENTRY_HEADER;
            if len > MAX_ENCODED_BYTES || start + len > self.plain.len() {
                self.damage = Some(format!(
                    "entry {} claims {len} bytes, more than the block or the format holds",
                    self.entries.len()
                ));
                break;
            }
            if self.entries.len() == MAX_RECORDS {
                self.damage = Some(format!("more than {MAX_RECORDS} entries"));
                break;
            }
            self.entries.push((start, len));
            at = start + len;
        }
        self
    }

    /// Holds no entries, for stored bytes that could not be loaded (`why`).
    pub fn unreadable(&mut self, why: &str) -> &mut Block {
        self.entries.clear();
        self.plain.clear();
        self.damage = Some(why.to_string());
        self
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entry `i`'s kept leaf hash and record bytes.
    pub fn entry(&self, i: usize) -> Option<(&[u8], &[u8])> {
        let &(start, len) = self.entries.get(i)?;
        Some((
            &self.plain[start - ENTRY_HEADER..start - 4],
            &self.plain[start..start + len],
        ))
    }

    /// What is wrong after the last entry, if anything.
    pub fn damage(&self) -> Option<&str> {
        self.damage.as_deref()
    }
}

/// A whole block built at once from `(leaf, record)` pairs (tests and tools; the writer uses
/// a `BlockEncoder`).
pub fn encode<'a>(entries: impl IntoIterator<Item = (&'a Hash, &'a [u8])>) -> Result<Vec<u8>> {
    let mut encoder = BlockEncoder::new()?;
    for (leaf, record) in entries {
        encoder.push(leaf, record)?;
    }
    encoder.finish()
}

/// A whole block decoded at once into `(leaf, record)` pairs, or what is wrong with it
/// (tests and tools).
pub fn decode(stored: &[u8]) -> std::result::Result<Vec<(Hash, Vec<u8>)>, String> {
    let mut block = Block::new().map_err(|e| e.to_string())?;
    block.decode(stored);
    if let Some(damage) = block.damage() {
        return Err(damage.to_string());
    }
    Ok((0..block.len())
        .filter_map(|i| block.entry(i))
        .map(|(leaf, record)| {
            let mut hash = [0; 32];
            hash.copy_from_slice(leaf);
            (hash, record.to_vec())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn plain(entries: &[(Hash, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (leaf, record) in entries {
            out.extend_from_slice(leaf);
            out.extend_from_slice(&(record.len() as u32).to_le_bytes());
            out.extend_from_slice(record);
        }
        out
    }

    fn zstd(plain: &[u8]) -> Vec<u8> {
        zstd::bulk::compress(plain, 1).unwrap()
    }

    #[test]
    fn entries_round_trip_in_order() {
        let n = MAX_RECORDS as u32;
        let records: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; i as usize]).collect();
        let leaves: Vec<Hash> = (0..n).map(|i| [i as u8 ^ 0x5a; 32]).collect();
        let stored = encode(leaves.iter().zip(records.iter().map(|r| &r[..]))).unwrap();
        let back = decode(&stored).unwrap();
        assert_eq!(back.len(), MAX_RECORDS);
        for (i, (leaf, record)) in back.iter().enumerate() {
            assert_eq!(leaf, &leaves[i]);
            assert_eq!(record, &records[i]);
        }
    }

    /// The plain layout is the documented one: a block written by hand decodes.
    #[test]
    fn a_block_written_to_the_documented_layout_decodes() {
        let stored = zstd(&plain(&[
            ([1; 32], b"first"),
            ([2; 32], b""),
            ([3; 32], b"x"),
        ]));
        assert_eq!(
            decode(&stored).unwrap(),
            vec![
                ([1; 32], b"first".to_vec()),
                ([2; 32], Vec::new()),
                ([3; 32], b"x".to_vec())
            ]
        );
        assert_eq!(decode(&zstd(&[])).unwrap(), vec![]);
    }

    #[test]
    fn damage_keeps_the_entries_before_it() {
        let good = plain(&[([1; 32], b"one"), ([2; 32], b"two")]);
        let mut block = Block::new().unwrap();

        let mut cut = good.clone();
        cut.extend_from_slice(&[9; 20]);
        block.decode(&zstd(&cut));
        assert_eq!(block.len(), 2);
        assert_eq!(block.damage(), Some("entry 2 is cut short"));

        let mut long = good.clone();
        long.extend_from_slice(&[9; 32]);
        long.extend_from_slice(&100u32.to_le_bytes());
        long.extend_from_slice(b"short");
        block.decode(&zstd(&long));
        assert_eq!(block.len(), 2);
        assert!(block
            .damage()
            .unwrap()
            .starts_with("entry 2 claims 100 bytes"));

        let mut huge = good;
        huge.extend_from_slice(&[9; 32]);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        block.decode(&zstd(&huge));
        assert_eq!(block.len(), 2);

        block.decode(b"not zstd at all");
        assert_eq!(block.len(), 0);
        assert!(block.damage().unwrap().starts_with("does not decompress"));

        block.decode(&vec![0; MAX_STORED_BYTES + 1]);
        assert!(block.damage().unwrap().contains("more than a block holds"));
    }

    /// A frame that decompresses beyond `MAX_PLAIN_BYTES` (a zip bomb: 64 MiB of zeros is a
    /// few KiB stored) is refused without allocating it, whether its header says its size
    /// or not.
    #[test]
    fn a_block_larger_than_the_limit_is_refused() {
        let zeros = vec![0; 64 << 20];
        let bomb = zstd(&zeros);
        assert!(bomb.len() < 64 << 10);
        let mut block = Block::new().unwrap();
        block.decode(&bomb);
        assert_eq!(block.len(), 0);
        assert_eq!(
            block.damage(),
            Some("67108864 plain bytes, more than a block holds")
        );
        assert_eq!(block.plain.capacity(), 0);

        let no_size = zstd::stream::encode_all(&zeros[..], 1).unwrap();
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&no_size),
            Ok(None)
        ));
        block.decode(&no_size);
        assert_eq!(block.len(), 0);
        assert!(block.damage().unwrap().starts_with("does not decompress"));
        assert!(block.plain.capacity() < 2 * MAX_PLAIN_BYTES);
    }

    #[test]
    fn more_than_max_records_entries_are_damage() {
        let many: Vec<(Hash, &[u8])> = (0..=MAX_RECORDS).map(|_| ([0; 32], &b""[..])).collect();
        let mut block = Block::new().unwrap();
        block.decode(&zstd(&plain(&many)));
        assert_eq!(block.len(), MAX_RECORDS);
        assert_eq!(
            block.damage(),
            Some(format!("more than {MAX_RECORDS} entries").as_str())
        );
    }

    #[test]
    fn the_encoder_splits_by_count_and_by_bytes() {
        let mut encoder = BlockEncoder::new().unwrap();
        assert!(encoder.fits(MAX_ENCODED_BYTES));
        for _ in 0..MAX_RECORDS {
            assert!(encoder.fits(10));
            encoder.push(&[0; 32], &[0; 10]).unwrap();
        }
        assert!(!encoder.fits(10));
        assert!(encoder.push(&[0; 32], &[0; 10]).is_err());
        encoder.finish().unwrap();
        assert!(encoder.is_empty());
        encoder.push(&[0; 32], &vec![0; MAX_ENCODED_BYTES]).unwrap();
        for _ in 0..2 {
            encoder.push(&[0; 32], &vec![0; MAX_ENCODED_BYTES]).unwrap();
        }
        assert!(!encoder.fits(MAX_ENCODED_BYTES));
        assert!(encoder.push(&[0; 32], &vec![0; MAX_ENCODED_BYTES]).is_err());
        encoder.clear();
        assert!(encoder
            .push(&[0; 32], &vec![0; MAX_ENCODED_BYTES + 1])
            .is_err());
    }

    proptest! {
        /// Arbitrary stored bytes, and arbitrary plain bytes in a valid frame, never panic
        /// and never yield an entry outside the plain bytes.
        #[test]
        fn decoding_anything_is_safe(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut block = Block::new().unwrap();
            block.decode(&bytes);
            prop_assert!(block.len() <= MAX_RECORDS);
            block.decode(&zstd(&bytes));
            for i in 0..block.len() {
                prop_assert!(block.entry(i).is_some());
            }
            prop_assert!(block.damage().is_some() || block.len() * ENTRY_HEADER <= bytes.len());
        }
    }
}
