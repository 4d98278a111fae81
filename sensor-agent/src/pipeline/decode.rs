//! Decode stage: ring-buffer bytes → typed kernel events, by checked conversion.
//!
//! The kind byte is converted with `EventKind::try_from`, then the bytes are read as the
//! kind's struct by zerocopy's `read_from_prefix`, which checks the length (the structs
//! derive `FromBytes`: every bit pattern is valid); a record that fails either check is
//! rejected and counted, never reinterpreted.

use std::mem::size_of;

use sensor_common::{
    EventHeader, EventKind, ExecEvent, ExitEvent, FileEvent, ForkEvent, IoUringEvent,
    PathChangeEvent, RouteEvent, SyscallEvent, UnknownKind,
};
use zerocopy::FromBytes;

/// A kernel event after decoding.
#[derive(Clone, Copy)]
pub enum Decoded {
    /// `file_open`, `proc_access`, `tracefs_write` or `core_pattern_write` (see `header.kind`).
    File(FileEvent),
    Syscall(SyscallEvent),
    /// `perf_event_open`, `bpf`, `prlimit64` or `fanotify_mark`.
    Route(RouteEvent),
    /// `file_rename`, `file_unlink` or `file_link` (see `header.kind`).
    PathChange(PathChangeEvent),
    IoUring(IoUringEvent),
    Exec(ExecEvent),
    Fork(ForkEvent),
    Exit(ExitEvent),
    /// Built by the fold stage from the kernel's fold map, not read from the ring buffer.
    Repeat(super::fold::Repeat),
}

impl Decoded {
    pub fn header(&self) -> &EventHeader {
        match self {
            Decoded::File(e) => &e.header,
            Decoded::Syscall(e) => &e.header,
            Decoded::Route(e) => &e.header,
            Decoded::PathChange(e) => &e.header,
            Decoded::IoUring(e) => &e.header,
            Decoded::Exec(e) => &e.header,
            Decoded::Fork(e) => &e.header,
            Decoded::Exit(e) => &e.header,
            Decoded::Repeat(r) => &r.file.header,
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than the event header")]
    NoHeader(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u8),
    #[error("{kind:?} record of {len} bytes is shorter than its {need}-byte layout")]
    Short {
        kind: EventKind,
        len: usize,
        need: usize,
    },
}

impl From<UnknownKind> for DecodeError {
    fn from(e: UnknownKind) -> Self {
        DecodeError::UnknownKind(e.0)
    }
}

/// Reads `T` from the front of `bytes` (any alignment; bytes past `T` are the ring buffer's
/// rounding and ignored).
fn read<T: FromBytes>(kind: EventKind, bytes: &[u8]) -> Result<T, DecodeError> {
    T::read_from_prefix(bytes)
        .map(|(event, _)| event)
        .map_err(|_| DecodeError::Short {
            kind,
            len: bytes.len(),
            need: size_of::<T>(),
        })
}

pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    if bytes.len() < size_of::<EventHeader>() {
        return Err(DecodeError::NoHeader(bytes.len()));
    }
    let kind = EventKind::try_from(bytes[0])?;
    Ok(match kind {
        EventKind::FileOpen
        | EventKind::ProcAccess
        | EventKind::TracefsWrite
        | EventKind::CorePatternWrite => Decoded::File(read(kind, bytes)?),
        EventKind::Ptrace
        | EventKind::ProcessVmReadv
        | EventKind::ProcessVmWritev
        | EventKind::PidfdGetfd
        | EventKind::Keyctl
        | EventKind::AddKey
        | EventKind::RequestKey
        | EventKind::CoreSignal => Decoded::Syscall(read(kind, bytes)?),
        EventKind::FileRename | EventKind::FileUnlink | EventKind::FileLink => {
            Decoded::PathChange(read(kind, bytes)?)
        }
        EventKind::IoUring => Decoded::IoUring(read(kind, bytes)?),
        EventKind::Exec => Decoded::Exec(read(kind, bytes)?),
        EventKind::Fork => Decoded::Fork(read(kind, bytes)?),
        EventKind::Exit => Decoded::Exit(read(kind, bytes)?),
        EventKind::PerfEventOpen
        | EventKind::Bpf
        | EventKind::Prlimit64
        | EventKind::FanotifyMark => Decoded::Route(read(kind, bytes)?),
    })
}

/// The bytes of a NUL-terminated kernel string buffer, up to the first NUL.
pub fn c_bytes(buf: &[u8]) -> &[u8] {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    &buf[..end]
}

/// A NUL-terminated kernel string buffer as text (invalid UTF-8 replaced).
pub fn c_string(buf: &[u8]) -> String {
    String::from_utf8_lossy(c_bytes(buf)).into_owned()
}
