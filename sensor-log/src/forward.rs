//! The messages of the forwarding protocol between an agent and a collector, version 1
//! (docs/forwarding.md): their bytes and a bounded decoder for a stream of them. Plain std,
//! no I/O: the transport (mutually authenticated TLS) carries the bytes, this module gives
//! them meaning. A batch travels as the items of a batch file (`batch_file.rs`), verbatim, so
//! a collector verifies exactly the bytes the agent signed.
//!
//! ```text
//! frame = tag:u8 length:u32 payload[length]
//! ```
//!
//! Every length is checked against its bound before anything is allocated for it; a payload
//! must be read to its last byte; an unknown tag, an over-long or a truncated frame is a
//! `ProtocolError`, never a panic.

use std::fmt;

use crate::batch_file::{
    BatchFileWriter, Cursor, ITEM_BATCH, ITEM_RECORD, MAX_RECORD, MAX_SIGNATURE_BYTES,
};
use crate::error::Error;
use crate::record::HostId;

/// First bytes of a `Hello`.
pub const MAGIC: &[u8; 14] = b"sensor-forward";
/// The protocol version this code speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest frame a peer may announce or send, whatever it announces.
pub const HARD_MAX_MESSAGE: u32 = 64 << 20;
/// The largest frame a collector accepts unless configured otherwise.
pub const DEFAULT_MAX_MESSAGE: u32 = 8 << 20;
/// Keys a `Hello` may carry (the oldest retained batch's key epoch needs one).
pub const MAX_HELLO_KEYS: u32 = 16;
/// Longest reason text in a `Refuse` or `Error`.
pub const MAX_REASON_BYTES: u16 = 1024;
/// Bytes of the frame header: tag and length.
pub const FRAME_HEADER: usize = 5;

/// Frame tags; agent to collector below 0x11, collector to agent from 0x11.
pub const TAG_HELLO: u8 = 0x10;
pub const TAG_WELCOME: u8 = 0x11;
pub const TAG_ACK: u8 = 0x12;
pub const TAG_REFUSE: u8 = 0x13;
pub const TAG_ERROR: u8 = 0x14;
pub const TAG_BATCH: u8 = 0x20;
pub const TAG_BYE: u8 = 0x21;

/// The first message of a session: who the agent is and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub host_id: HostId,
    /// The agent's version, for the collector's host list (at most 255 bytes of UTF-8).
    pub agent_version: String,
    /// The oldest retained and the newest sealed batch numbers.
    pub oldest: u64,
    pub newest: u64,
    /// (key epoch, Ed25519 public key) of the oldest retained batch's key epoch, for an
    /// enrollment on first contact (the collector pins it or an operator approves it).
    pub keys: Vec<(u64, [u8; 32])>,
}

/// The collector's answer to `Hello`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    pub version: u16,
    /// The batch the collector expects next for this host; 0 when it holds none.
    pub next_batch: u64,
    /// Largest frame and most records per batch the collector accepts.
    pub max_message: u32,
    pub max_records: u32,
    /// Batches the agent may have unanswered.
    pub window: u16,
    /// The collector's name (at most 255 bytes of UTF-8).
    pub collector: String,
}

/// One sealed batch: the signed header bytes, the signature and the batch's records, exactly
/// as the agent's store holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchMessage {
    pub header: Vec<u8>,
    pub signature: Vec<u8>,
    pub records: Vec<Vec<u8>>,
}

/// Why a collector did not store a batch; the session goes on.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, strum::FromRepr, strum::IntoStaticStr, strum::VariantArray,
)]
#[repr(u16)]
#[strum(serialize_all = "snake_case")]
pub enum RefuseCode {
    /// Not the batch expected next: resend from `expected`.
    OutOfOrder = 1,
    /// The items do not parse, or exceed a bound.
    Malformed = 2,
    Oversized = 3,
    /// Verification failed; the reason is the verifier's failure.
    Invalid = 4,
    /// A different batch is held under this number: both are kept as evidence.
    Fork = 5,
    /// The batch's host id is not the client certificate's.
    HostMismatch = 6,
    /// The host (or its new log) awaits an operator's approval.
    NotEnrolled = 7,
    /// The collector's store failed; nothing was stored, send again later.
    Unavailable = 8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The refused batch's number, 0 when it could not be read.
    pub batch: u64,
    /// The batch the collector expects next.
    pub expected: u64,
    pub code: RefuseCode,
    pub reason: String,
}

/// Why a session ends; the peer closes it after sending this.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, strum::FromRepr, strum::IntoStaticStr, strum::VariantArray,
)]
#[repr(u16)]
#[strum(serialize_all = "snake_case")]
pub enum ErrorCode {
    UnsupportedVersion = 1,
    BadHello = 2,
    /// The `Hello` names another host than the client certificate.
    HostMismatch = 3,
    /// An unknown tag, a truncated frame, or a message out of turn.
    ProtocolViolation = 4,
    ShuttingDown = 5,
    /// The collector's store failed; the agent tries again later.
    Unavailable = 6,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionError {
    pub code: ErrorCode,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    Batch(BatchMessage),
    Bye,
    Welcome(Welcome),
    /// The batch is durably stored (or was already, byte for byte).
    Ack(u64),
    Refuse(Refusal),
    Error(SessionError),
}

impl Message {
    /// The message's name in docs/forwarding.md.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Batch(_) => "batch",
            Message::Bye => "bye",
            Message::Welcome(_) => "welcome",
            Message::Ack(_) => "ack",
            Message::Refuse(_) => "refuse",
            Message::Error(_) => "error",
        }
    }
}

impl fmt::Display for RefuseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.into())
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.into())
    }
}

/// A stream that is not a stream of version 1 messages. The session ends.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("unknown message tag {0:#04x}")]
    UnknownTag(u8),
    #[error("a message of {len} bytes is over the {max}-byte limit")]
    TooLong { len: u32, max: u32 },
    #[error("the stream ends inside a message ({0} bytes of it)")]
    Truncated(usize),
    #[error("unsupported protocol version {0} (this side speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u16),
    #[error(transparent)]
    Malformed(#[from] Error),
}

impl ProtocolError {
    /// Whether the stream is still in step after this error (`Framer`): the bad message can
    /// be refused and the next one read.
    pub fn recoverable(&self) -> bool {
        matches!(
            self,
            ProtocolError::TooLong { .. } | ProtocolError::Malformed(_)
        )
    }
}

/// Appends the frame of `message` to `out`.
pub fn encode(message: &Message, out: &mut Vec<u8>) -> Result<(), Error> {
    let start = out.len();
    out.extend_from_slice(&[tag_of(message), 0, 0, 0, 0]);
    match message {
        Message::Hello(h) => {
            out.extend_from_slice(MAGIC);
            out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
            out.extend_from_slice(&h.host_id);
            short_text(out, &h.agent_version, "agent version")?;
            out.extend_from_slice(&h.oldest.to_le_bytes());
            out.extend_from_slice(&h.newest.to_le_bytes());
            let count = u32::try_from(h.keys.len())
                .ok()
                .filter(|&n| n <= MAX_HELLO_KEYS)
                .ok_or_else(|| Error::malformed("hello", "too many keys"))?;
            out.extend_from_slice(&count.to_le_bytes());
            for (epoch, key) in &h.keys {
                out.extend_from_slice(&epoch.to_le_bytes());
                out.extend_from_slice(key);
            }
        }
        Message::Batch(b) => batch_items(b, out)?,
        Message::Bye => {}
        Message::Welcome(w) => {
            out.extend_from_slice(&w.version.to_le_bytes());
            out.extend_from_slice(&w.next_batch.to_le_bytes());
            out.extend_from_slice(&w.max_message.to_le_bytes());
            out.extend_from_slice(&w.max_records.to_le_bytes());
            out.extend_from_slice(&w.window.to_le_bytes());
            short_text(out, &w.collector, "collector name")?;
        }
        Message::Ack(batch) => out.extend_from_slice(&batch.to_le_bytes()),
        Message::Refuse(r) => {
            out.extend_from_slice(&r.batch.to_le_bytes());
            out.extend_from_slice(&r.expected.to_le_bytes());
            out.extend_from_slice(&(r.code as u16).to_le_bytes());
            reason(out, &r.reason);
        }
        Message::Error(e) => {
            out.extend_from_slice(&(e.code as u16).to_le_bytes());
            reason(out, &e.reason);
        }
    }
    set_length(out, start)
}

/// Appends the frame of a batch message, which stays the caller's.
pub fn encode_batch(batch: &BatchMessage, out: &mut Vec<u8>) -> Result<(), Error> {
    let start = out.len();
    out.extend_from_slice(&[TAG_BATCH, 0, 0, 0, 0]);
    batch_items(batch, out)?;
    set_length(out, start)
}

fn batch_items(b: &BatchMessage, out: &mut Vec<u8>) -> Result<(), Error> {
    let mut items = BatchFileWriter::items(&mut *out);
    let io = |e: std::io::Error| Error::malformed("batch message", e);
    items.batch(&b.header, &b.signature).map_err(io)?;
    for record in &b.records {
        items.record(record).map_err(io)?;
    }
    Ok(())
}

/// Writes the length of the frame that starts at `start` and runs to the end of `out`.
fn set_length(out: &mut [u8], start: usize) -> Result<(), Error> {
    let len = u32::try_from(out.len() - start - FRAME_HEADER)
        .ok()
        .filter(|&n| n <= HARD_MAX_MESSAGE)
        .ok_or_else(|| Error::malformed("message", "over the hard message limit"))?;
    out[start + 1..start + FRAME_HEADER].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

fn tag_of(message: &Message) -> u8 {
    match message {
        Message::Hello(_) => TAG_HELLO,
        Message::Batch(_) => TAG_BATCH,
        Message::Bye => TAG_BYE,
        Message::Welcome(_) => TAG_WELCOME,
        Message::Ack(_) => TAG_ACK,
        Message::Refuse(_) => TAG_REFUSE,
        Message::Error(_) => TAG_ERROR,
    }
}

/// A `u8`-length-prefixed UTF-8 text (names and versions).
fn short_text(out: &mut Vec<u8>, text: &str, what: &'static str) -> Result<(), Error> {
    let len =
        u8::try_from(text.len()).map_err(|_| Error::malformed(what, "longer than 255 bytes"))?;
    out.push(len);
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// A `u16`-length-prefixed reason, cut to `MAX_REASON_BYTES` at a character boundary.
fn reason(out: &mut Vec<u8>, text: &str) {
    let mut end = text.len().min(usize::from(MAX_REASON_BYTES));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    // `end` is at most MAX_REASON_BYTES, which fits a u16.
    out.extend_from_slice(&u16::try_from(end).unwrap_or(MAX_REASON_BYTES).to_le_bytes());
    out.extend_from_slice(&text.as_bytes()[..end]);
}

/// Reassembles messages from a byte stream cut anywhere (TLS records, HTTP/2 frames).
///
/// A frame that is whole but whose payload does not decode, and a frame over the length
/// limit, are errors after which the stream is still in step: the framer drops the bad
/// frame (the over-long one as its bytes arrive, never holding them) and the next call goes
/// on with the frame after it. The session can refuse that one message and keep serving.
pub struct Framer {
    buf: Vec<u8>,
    max: u32,
    /// Bytes of an over-long frame still to be dropped as they arrive.
    skip: u64,
}

impl Framer {
    /// A framer accepting frames of at most `max_message` bytes (capped by the hard limit).
    pub fn new(max_message: u32) -> Framer {
        Framer {
            buf: Vec::new(),
            max: max_message.min(HARD_MAX_MESSAGE),
            skip: 0,
        }
    }

    /// Takes the next bytes of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, `None` until one has arrived. A frame's length is checked
    /// against the limit as soon as its header is in, before its payload is waited for.
    pub fn next_message(&mut self) -> Result<Option<Message>, ProtocolError> {
        if self.skip > 0 {
            let dropped = self
                .buf
                .len()
                .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
            self.buf.drain(..dropped);
            self.skip -= dropped as u64;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        let Some(header) = self.buf.get(..FRAME_HEADER) else {
            return Ok(None);
        };
        let tag = header[0];
        let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
        if !matches!(
            tag,
            TAG_HELLO | TAG_WELCOME | TAG_ACK | TAG_REFUSE | TAG_ERROR | TAG_BATCH | TAG_BYE
        ) {
            return Err(ProtocolError::UnknownTag(tag));
        }
        if len > self.max {
            self.buf.drain(..FRAME_HEADER);
            self.skip = u64::from(len);
            return Err(ProtocolError::TooLong { len, max: self.max });
        }
        let end = FRAME_HEADER + len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let message = decode(tag, &self.buf[FRAME_HEADER..end]);
        self.buf.drain(..end);
        Ok(Some(message?))
    }

    /// The stream ended: an error if it ended inside a message.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        match (self.buf.len(), self.skip) {
            (0, 0) => Ok(()),
            (n, skip) => Err(ProtocolError::Truncated(
                n.max(usize::try_from(skip).unwrap_or(usize::MAX)),
            )),
        }
    }
}

/// Decodes one payload, which must be read to its last byte.
pub fn decode(tag: u8, payload: &[u8]) -> Result<Message, ProtocolError> {
    let mut c = Cursor::message(payload, payload.len());
    let message = match tag {
        TAG_HELLO => {
            let magic: [u8; 14] = c.array("magic")?;
            if &magic != MAGIC {
                return Err(c.error("not a sensor-forward hello (bad magic)").into());
            }
            let version = u16::from_le_bytes(c.array("version")?);
            if version != PROTOCOL_VERSION {
                return Err(ProtocolError::UnsupportedVersion(version));
            }
            let host_id = c.array("host id")?;
            let agent_version = read_short_text(&mut c, "agent version")?;
            let oldest = u64::from_le_bytes(c.array("oldest")?);
            let newest = u64::from_le_bytes(c.array("newest")?);
            let count = u32::from_le_bytes(c.array("key count")?);
            if count > MAX_HELLO_KEYS {
                return Err(c
                    .error(format!("{count} keys is more than {MAX_HELLO_KEYS}"))
                    .into());
            }
            let mut keys = Vec::new();
            for _ in 0..count {
                keys.push((u64::from_le_bytes(c.array("key epoch")?), c.array("key")?));
            }
            Message::Hello(Hello {
                host_id,
                agent_version,
                oldest,
                newest,
                keys,
            })
        }
        TAG_BATCH => {
            let mut batch = BatchMessage::default();
            if c.tag()? != Some(ITEM_BATCH) {
                return Err(c.error("a batch message starts with a batch item").into());
            }
            c.field(&mut batch.header, MAX_RECORD, "header")?;
            c.field(&mut batch.signature, MAX_SIGNATURE_BYTES, "signature")?;
            while let Some(tag) = c.tag()? {
                if tag != ITEM_RECORD {
                    return Err(c
                        .error(format!("item tag {tag} where a record item belongs"))
                        .into());
                }
                let mut record = Vec::new();
                c.field(&mut record, MAX_RECORD, "record")?;
                batch.records.push(record);
            }
            Message::Batch(batch)
        }
        TAG_BYE => Message::Bye,
        TAG_WELCOME => Message::Welcome(Welcome {
            version: u16::from_le_bytes(c.array("version")?),
            next_batch: u64::from_le_bytes(c.array("next batch")?),
            max_message: u32::from_le_bytes(c.array("max message")?),
            max_records: u32::from_le_bytes(c.array("max records")?),
            window: u16::from_le_bytes(c.array("window")?),
            collector: read_short_text(&mut c, "collector name")?,
        }),
        TAG_ACK => Message::Ack(u64::from_le_bytes(c.array("batch")?)),
        TAG_REFUSE => {
            let batch = u64::from_le_bytes(c.array("batch")?);
            let expected = u64::from_le_bytes(c.array("expected")?);
            let raw = u16::from_le_bytes(c.array("code")?);
            let code = RefuseCode::from_repr(raw)
                .ok_or_else(|| c.error(format!("unknown refusal code {raw}")))?;
            let reason = read_reason(&mut c)?;
            Message::Refuse(Refusal {
                batch,
                expected,
                code,
                reason,
            })
        }
        TAG_ERROR => {
            let raw = u16::from_le_bytes(c.array("code")?);
            let code = ErrorCode::from_repr(raw)
                .ok_or_else(|| c.error(format!("unknown error code {raw}")))?;
            let reason = read_reason(&mut c)?;
            Message::Error(SessionError { code, reason })
        }
        other => return Err(ProtocolError::UnknownTag(other)),
    };
    if tag != TAG_BATCH && c.tag()?.is_some() {
        return Err(c.error("bytes after the end of the message").into());
    }
    Ok(message)
}

fn read_short_text(c: &mut Cursor<&[u8]>, what: &'static str) -> Result<String, Error> {
    let [len] = c.array::<1>(what)?;
    read_text(c, usize::from(len), what)
}

fn read_reason(c: &mut Cursor<&[u8]>) -> Result<String, Error> {
    let len = u16::from_le_bytes(c.array("reason length")?);
    if len > MAX_REASON_BYTES {
        return Err(c.error(format!(
            "a reason of {len} bytes is over the {MAX_REASON_BYTES}-byte limit"
        )));
    }
    read_text(c, usize::from(len), "reason")
}

fn read_text(c: &mut Cursor<&[u8]>, len: usize, what: &'static str) -> Result<String, Error> {
    let mut bytes = vec![0u8; len];
    c.exact(&mut bytes, what)?;
    String::from_utf8(bytes).map_err(|_| c.error(format!("the {what} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;

    fn every_message() -> Vec<Message> {
        vec![
            Message::Hello(Hello {
                host_id: [0x11; 16],
                agent_version: "0.1.0".into(),
                oldest: 1,
                newest: 42,
                keys: vec![(1, [0xab; 32])],
            }),
            Message::Batch(BatchMessage {
                header: vec![1, 2, 3],
                signature: vec![9; 64],
                records: vec![vec![4, 5], vec![]],
            }),
            Message::Bye,
            Message::Welcome(Welcome {
                version: PROTOCOL_VERSION,
                next_batch: 43,
                max_message: DEFAULT_MAX_MESSAGE,
                max_records: 65_536,
                window: 64,
                collector: "c1".into(),
            }),
            Message::Ack(42),
            Message::Refuse(Refusal {
                batch: 44,
                expected: 43,
                code: RefuseCode::OutOfOrder,
                reason: "expected batch 43".into(),
            }),
            Message::Error(SessionError {
                code: ErrorCode::ProtocolViolation,
                reason: "é".into(),
            }),
        ]
    }

    fn frame(message: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        encode(message, &mut out).expect("encodes");
        out
    }

    /// Every message decodes to itself from a stream cut at every byte.
    #[test]
    fn every_message_round_trips_through_a_stream_cut_anywhere() {
        let messages = every_message();
        let stream: Vec<u8> = messages.iter().flat_map(frame).collect();
        for cut in 0..=stream.len() {
            let mut framer = Framer::new(DEFAULT_MAX_MESSAGE);
            let mut got = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                framer.push(part);
                while let Some(m) = framer.next_message().expect("decodes") {
                    got.push(m);
                }
            }
            framer.finish().expect("nothing left");
            assert_eq!(got, messages, "cut at {cut}");
        }
    }

    /// The frames of docs/forwarding.md's examples, byte for byte.
    #[test]
    fn documented_frames() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/forwarding.md"
        ))
        .expect("docs/forwarding.md");
        let lines: Vec<String> = every_message()
            .iter()
            .map(|m| format!("{}: {}", Message::name(m), hex::encode(frame(m))))
            .collect();
        assert!(
            lines.iter().all(|l| doc.contains(l.as_str())),
            "docs/forwarding.md lacks some of these frames:\n{}",
            lines.join("\n")
        );
    }

    /// Every code appears in the document as its number and its name.
    #[test]
    fn documented_codes() {
        use strum::VariantArray;
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/forwarding.md"
        ))
        .expect("docs/forwarding.md");
        let refuse = RefuseCode::VARIANTS
            .iter()
            .map(|c| (*c as u16, c.to_string()));
        let error = ErrorCode::VARIANTS
            .iter()
            .map(|c| (*c as u16, c.to_string()));
        for (number, name) in refuse.chain(error) {
            let text = format!("{number} `{name}`");
            assert!(doc.contains(&text), "docs/forwarding.md lacks {text}");
        }
    }

    fn refused(bytes: &[u8]) -> String {
        let mut framer = Framer::new(DEFAULT_MAX_MESSAGE);
        framer.push(bytes);
        match framer.next_message() {
            Err(e) => e.to_string(),
            Ok(m) => panic!("accepted: {m:?}"),
        }
    }

    #[test]
    fn malformed_frames_are_refused_with_the_reason() {
        // A length over the limit is refused from the header alone, before any payload.
        let mut huge = vec![TAG_BATCH];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(refused(&huge).contains("over the 8388608-byte limit"));
        assert!(refused(&[0x7f, 0, 0, 0, 0]).contains("unknown message tag 0x7f"));

        let mut ack = frame(&Message::Ack(1));
        ack[1] += 1;
        ack.push(0);
        assert!(refused(&ack).contains("bytes after the end of the message"));

        let mut hello = frame(&every_message()[0]);
        hello[FRAME_HEADER] ^= 1;
        assert!(refused(&hello).contains("bad magic"));
        let mut hello = frame(&every_message()[0]);
        hello[FRAME_HEADER + MAGIC.len()] = 2;
        assert!(refused(&hello).contains("unsupported protocol version 2"));

        let mut refuse = frame(&every_message()[5]);
        refuse[FRAME_HEADER + 16] = 99;
        assert!(refused(&refuse).contains("unknown refusal code 99"));

        // A record item before the batch item, and a batch item among the records.
        let mut batch = frame(&every_message()[1]);
        batch[FRAME_HEADER] = ITEM_RECORD;
        assert!(refused(&batch).contains("starts with a batch item"));

        let mut error = frame(&every_message()[6]);
        let last = error.len() - 1;
        error[last] = 0xff;
        assert!(refused(&error).contains("not UTF-8"));

        let mut framer = Framer::new(DEFAULT_MAX_MESSAGE);
        framer.push(&frame(&Message::Ack(1))[..7]);
        assert!(framer.next_message().expect("waits").is_none());
        assert!(framer.finish().is_err(), "a cut message at the end");
    }

    /// A peer that sends one bad message must not lose the session for the good ones after
    /// it: the framer stays in step past a payload that does not decode and past an
    /// over-long frame, which it drops as it arrives without holding it.
    #[test]
    fn the_stream_stays_in_step_after_a_bad_message() {
        let mut bad_batch = frame(&every_message()[1]);
        bad_batch[FRAME_HEADER] = ITEM_RECORD;
        let mut stream = bad_batch;
        stream.extend_from_slice(&frame(&Message::Ack(7)));
        let mut huge = vec![TAG_BATCH];
        huge.extend_from_slice(&100_000u32.to_le_bytes());
        stream.extend_from_slice(&huge);
        stream.extend_from_slice(&vec![0xee; 100_000]);
        stream.extend_from_slice(&frame(&Message::Ack(8)));

        let mut framer = Framer::new(1000);
        let mut seen = Vec::new();
        for chunk in stream.chunks(4096) {
            framer.push(chunk);
            assert!(
                framer.buf.len() <= 4096 + 1000,
                "held {} bytes",
                framer.buf.len()
            );
            loop {
                match framer.next_message() {
                    Ok(Some(m)) => seen.push(format!("{m:?}")),
                    Ok(None) => break,
                    Err(e) => {
                        assert!(e.recoverable(), "{e}");
                        seen.push(e.to_string());
                    }
                }
                assert!(
                    seen.len() <= 4,
                    "the framer repeats itself: {:?}",
                    &seen[..5]
                );
            }
        }
        framer.finish().expect("ends between messages");
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert!(seen[0].contains("starts with a batch item"), "{seen:?}");
        assert_eq!(seen[1], "Ack(7)");
        assert!(seen[2].contains("over the 1000-byte limit"), "{seen:?}");
        assert_eq!(seen[3], "Ack(8)");
        assert!(!ProtocolError::UnknownTag(0x7f).recoverable());
        assert!(!ProtocolError::Truncated(3).recoverable());
    }

    #[test]
    fn a_reason_is_cut_at_a_character_boundary() {
        let long = "é".repeat(600);
        let m = Message::Error(SessionError {
            code: ErrorCode::BadHello,
            reason: long,
        });
        let bytes = frame(&m);
        let Message::Error(e) = decode(TAG_ERROR, &bytes[FRAME_HEADER..]).expect("decodes") else {
            panic!("not an error")
        };
        assert_eq!(e.reason.len(), 1024);
    }
}
