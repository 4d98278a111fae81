//! A file of exported batches (docs/log-format.md, "Batch files"): a log taken off the host
//! (`sensorctl export`) and verified anywhere by the same `verify` as the store
//! (`sensorctl verify --file`), and the form of the negative test vectors.
//!
//! ```text
//! file   = MAGIC version:u16 key_count:u32 key{key_count} item*
//! key    = key_epoch:u64 public_key:[u8; 32]
//! item   = ITEM_BATCH  header_len:u32 header signature_len:u32 signature
//!        | ITEM_RECORD record_len:u32 record
//! ```
//!
//! Integers are little endian. The framing is not signed: it only delimits the signed bytes,
//! and the verifier judges those. Every length is checked against its bound before anything
//! is allocated, and a file that does not parse is an error naming the byte offset, never a
//! panic. An exporter writes each batch item followed by the record items of that batch.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use ed25519_dalek::VerifyingKey;

use crate::codec::MAX_ENCODED_BYTES;
use crate::error::{Error, Result};
use crate::source::{BatchSource, SourceBatch, SourceRecord};

/// First bytes of a batch file.
pub const MAGIC: &[u8; 14] = b"sensor-batches";
/// Layout version of the framing (not of the signed bytes, which carry their own).
pub const FILE_VERSION: u16 = 1;
/// Item tags.
pub const ITEM_BATCH: u8 = 1;
pub const ITEM_RECORD: u8 = 2;
/// Longest signature item accepted (Ed25519 signatures are 64 bytes; a longer one is read
/// and then fails verification, a much longer one is refused).
pub const MAX_SIGNATURE_BYTES: u32 = 64;
/// Most keys a file may carry (the exporter writes one: the oldest batch's).
pub const MAX_KEYS: u32 = 1024;

/// Read buffer of each of a file's two readers: a batch's worth of records per refill.
const READ_BUFFER: usize = 1 << 20;

/// Writes a batch file: `start`, then each batch followed by its records.
pub struct BatchFileWriter<W: Write> {
    out: W,
}

impl BatchFileWriter<BufWriter<File>> {
    /// Creates `path` (it must not exist: an export never overwrites evidence).
    pub fn create(path: &Path, keys: &[(u64, VerifyingKey)]) -> io::Result<Self> {
        let file = File::options().write(true).create_new(true).open(path)?;
        BatchFileWriter::start(BufWriter::new(file), keys)
    }
}

impl<W: Write> BatchFileWriter<W> {
    /// Writes the file header with the keys a verifier may trust on first use.
    pub fn start(mut out: W, keys: &[(u64, VerifyingKey)]) -> io::Result<Self> {
        out.write_all(MAGIC)?;
        out.write_all(&FILE_VERSION.to_le_bytes())?;
        out.write_all(&len_u32(keys.len())?.to_le_bytes())?;
        for (epoch, key) in keys {
            out.write_all(&epoch.to_le_bytes())?;
            out.write_all(key.as_bytes())?;
        }
        Ok(BatchFileWriter { out })
    }

    /// A writer of items only, without the file header: the body of a forwarding message,
    /// or the record items a collector keeps with a batch.
    pub fn items(out: W) -> Self {
        BatchFileWriter { out }
    }

    pub fn batch(&mut self, header: &[u8], signature: &[u8]) -> io::Result<()> {
        self.out.write_all(&[ITEM_BATCH])?;
        self.bytes(header)?;
        self.bytes(signature)
    }

    pub fn record(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(&[ITEM_RECORD])?;
        self.bytes(bytes)
    }

    /// Flushes and hands back the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }

    fn bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(&len_u32(bytes.len())?.to_le_bytes())?;
        self.out.write_all(bytes)
    }
}

fn len_u32(n: usize) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| io::Error::other(format!("{n} bytes do not fit a u32 length")))
}

/// A batch file read as a `BatchSource`: two cursors over the same bytes, one taking the
/// batch items and one the record items, each in file order.
pub struct BatchFile<R> {
    keys: Vec<(u64, VerifyingKey)>,
    batches: Cursor<R>,
    records: Cursor<R>,
}

impl BatchFile<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self> {
        let open = || {
            File::open(path)
                .map(|f| BufReader::with_capacity(READ_BUFFER, f))
                .map_err(Error::Read)
        };
        BatchFile::read(open()?, open()?)
    }
}

impl<R: Read> BatchFile<R> {
    /// Reads the file header from `first`; `second` is another reader of the same bytes.
    pub fn read(first: R, second: R) -> Result<Self> {
        let mut batches = Cursor::file(first);
        let mut magic = [0u8; MAGIC.len()];
        batches.exact(&mut magic, "magic")?;
        if &magic != MAGIC {
            batches.at = 0;
            return Err(batches.error("not a batch file (bad magic)"));
        }
        let version = u16::from_le_bytes(batches.array("version")?);
        if version != FILE_VERSION {
            batches.at = MAGIC.len() as u64;
            return Err(batches.error(format!("unknown batch file version {version}")));
        }
        let count = u32::from_le_bytes(batches.array("key count")?);
        if count > MAX_KEYS {
            return Err(batches.error(format!("{count} keys is more than {MAX_KEYS}")));
        }
        let mut keys = Vec::new();
        for _ in 0..count {
            let epoch = u64::from_le_bytes(batches.array("key epoch")?);
            let key = VerifyingKey::from_bytes(&batches.array("public key")?)
                .map_err(|e| batches.error(format!("not an Ed25519 public key: {e}")))?;
            keys.push((epoch, key));
        }
        let mut records = Cursor::file(second);
        records.pass(batches.at, "file header")?;
        Ok(BatchFile {
            keys,
            batches,
            records,
        })
    }
}

/// One reader's position in a batch file, or in a forwarding message (`forward.rs`), which
/// carries a batch as the same items.
pub(crate) struct Cursor<R> {
    input: R,
    at: u64,
    /// What is read, for errors: "batch file" or "forward message", and its short name.
    unit: &'static str,
    short: &'static str,
    /// Where the input ends, when known (a message's payload): a length past it is refused
    /// before anything is allocated for it.
    end: Option<u64>,
}

impl<R: Read> Cursor<R> {
    fn file(input: R) -> Cursor<R> {
        Cursor {
            input,
            at: 0,
            unit: "batch file",
            short: "file",
            end: None,
        }
    }

    /// A cursor over a message's payload of `len` bytes.
    pub(crate) fn message(input: R, len: usize) -> Cursor<R> {
        Cursor {
            input,
            at: 0,
            unit: "forward message",
            short: "message",
            end: Some(len as u64),
        }
    }

    pub(crate) fn error(&self, detail: impl std::fmt::Display) -> Error {
        Error::malformed(self.unit, format!("at byte {}: {detail}", self.at))
    }

    pub(crate) fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        self.input.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                self.error(format!("{} ends inside the {what}", self.short))
            }
            _ => Error::Read(e),
        })?;
        self.at += buf.len() as u64;
        Ok(())
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        self.exact(&mut out, what)?;
        Ok(out)
    }

    /// The next item's tag, `None` at the end of the file.
    pub(crate) fn tag(&mut self) -> Result<Option<u8>> {
        let mut tag = [0u8; 1];
        loop {
            return match self.input.read(&mut tag) {
                Ok(0) => Ok(None),
                Ok(_) => {
                    self.at += 1;
                    Ok(Some(tag[0]))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(Error::Read(e)),
            };
        }
    }

    /// A length-prefixed field into `buf`, refused before allocation when over `max`.
    pub(crate) fn field(&mut self, buf: &mut Vec<u8>, max: u32, what: &str) -> Result<()> {
        let len = self.length(max, what)?;
        buf.resize(len as usize, 0);
        self.exact(buf, what)
    }

    /// Skips a length-prefixed field.
    fn skip(&mut self, max: u32, what: &str) -> Result<()> {
        let len = self.length(max, what)?;
        self.pass(u64::from(len), what)
    }

    /// Reads past `len` bytes (through the reader's buffer: a seek would empty it).
    fn pass(&mut self, len: u64, what: &str) -> Result<()> {
        let passed =
            io::copy(&mut (&mut self.input).take(len), &mut io::sink()).map_err(Error::Read)?;
        if passed < len {
            self.at += passed;
            return Err(self.error(format!("{} ends inside the {what}", self.short)));
        }
        self.at += len;
        Ok(())
    }

    /// A field's length prefix, refused when over `max`; the error names the prefix's offset.
    fn length(&mut self, max: u32, what: &str) -> Result<u32> {
        let start = self.at;
        let len = u32::from_le_bytes(self.array(what)?);
        if len > max {
            self.at = start;
            return Err(self.error(format!(
                "a {what} of {len} bytes is over the {max}-byte limit"
            )));
        }
        if self
            .end
            .is_some_and(|end| u64::from(len) > end.saturating_sub(self.at))
        {
            return Err(self.error(format!("{} ends inside the {what}", self.short)));
        }
        Ok(len)
    }

    /// Skips items until one tagged `want`, which it leaves to be read; `false` at the end.
    fn find(&mut self, want: u8) -> Result<bool> {
        loop {
            match self.tag()? {
                None => return Ok(false),
                Some(tag) if tag == want => return Ok(true),
                Some(ITEM_BATCH) => {
                    self.skip(MAX_RECORD, "header")?;
                    self.skip(MAX_SIGNATURE_BYTES, "signature")?;
                }
                Some(ITEM_RECORD) => self.skip(MAX_RECORD, "record")?,
                Some(other) => {
                    self.at -= 1;
                    return Err(self.error(format!("unknown item tag {other}")));
                }
            }
        }
    }
}

pub(crate) const MAX_RECORD: u32 = MAX_ENCODED_BYTES as u32;

impl<R: Read> BatchSource for BatchFile<R> {
    type Error = Error;

    fn next_batch(&mut self, batch: &mut SourceBatch) -> Result<bool> {
        if !self.batches.find(ITEM_BATCH)? {
            return Ok(false);
        }
        batch.number = None;
        self.batches
            .field(&mut batch.header, MAX_RECORD, "header")?;
        self.batches
            .field(&mut batch.signature, MAX_SIGNATURE_BYTES, "signature")?;
        Ok(true)
    }

    fn next_record(&mut self, record: &mut SourceRecord) -> Result<bool> {
        if !self.records.find(ITEM_RECORD)? {
            return Ok(false);
        }
        record.seq = None;
        record.leaf = None;
        self.records
            .field(&mut record.bytes, MAX_RECORD, "record")?;
        Ok(true)
    }

    fn public_key(&mut self, key_epoch: u64) -> Result<Option<VerifyingKey>> {
        Ok(self
            .keys
            .iter()
            .find(|(epoch, _)| *epoch == key_epoch)
            .map(|(_, key)| *key))
    }
}
