//! Property tests of the decode stage: ring-buffer records of any bytes and any length give
//! a typed event or a `DecodeError`, never a panic, and a decoded event holds exactly the
//! bytes it was read from. The kernel writes these records, but a bug in a probe, or a kernel
//! whose layout differs, must cost a counted rejection, not the agent.
//!
//! The case count is proptest's (256, or `PROPTEST_CASES`); to search longer:
//! `PROPTEST_CASES=100000 cargo test --release -p sensor-agent --test decode_props`.

use std::mem::{offset_of, size_of};

use proptest::collection::vec;
use proptest::prelude::*;
use sensor_agent::pipeline::decode::{c_bytes, decode, DecodeError, Decoded};
use sensor_common::{
    EventHeader, EventKind, ExecEvent, ExitEvent, FileEvent, ForkEvent, IoUringEvent,
    PathChangeEvent, RouteEvent, SyscallEvent,
};

/// The layout each kind is read as: the kernel side's contract (sensor-ebpf), stated again
/// here so that a decode reading a kind as another layout fails.
fn layout(kind: EventKind) -> (&'static str, usize) {
    match kind {
        EventKind::FileOpen
        | EventKind::ProcAccess
        | EventKind::TracefsWrite
        | EventKind::CorePatternWrite => ("file", size_of::<FileEvent>()),
        EventKind::Ptrace
        | EventKind::ProcessVmReadv
        | EventKind::ProcessVmWritev
        | EventKind::PidfdGetfd
        | EventKind::Keyctl
        | EventKind::AddKey
        | EventKind::RequestKey
        | EventKind::CoreSignal => ("syscall", size_of::<SyscallEvent>()),
        EventKind::FileRename | EventKind::FileUnlink | EventKind::FileLink => {
            ("path_change", size_of::<PathChangeEvent>())
        }
        EventKind::IoUring => ("io_uring", size_of::<IoUringEvent>()),
        EventKind::Exec => ("exec", size_of::<ExecEvent>()),
        EventKind::Fork => ("fork", size_of::<ForkEvent>()),
        EventKind::Exit => ("exit", size_of::<ExitEvent>()),
        EventKind::PerfEventOpen
        | EventKind::Bpf
        | EventKind::Prlimit64
        | EventKind::FanotifyMark => ("route", size_of::<RouteEvent>()),
    }
}

fn variant(d: &Decoded) -> &'static str {
    match d {
        Decoded::File(_) => "file",
        Decoded::Syscall(_) => "syscall",
        Decoded::Route(_) => "route",
        Decoded::PathChange(_) => "path_change",
        Decoded::IoUring(_) => "io_uring",
        Decoded::Exec(_) => "exec",
        Decoded::Fork(_) => "fork",
        Decoded::Exit(_) => "exit",
        // Made by the fold stage, never decoded from a kernel record.
        Decoded::Repeat(_) => "repeat",
    }
}

fn largest() -> usize {
    EventKind::ALL
        .iter()
        .map(|k| layout(*k).1)
        .max()
        .expect("kinds")
}

/// Record bytes: a kind byte that is known or not, then any bytes, of any length up to a
/// little past the largest layout (most cases near a layout's size, where the checks are).
fn record() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop_oneof![
        3 => prop::sample::select(EventKind::ALL.to_vec()).prop_map(|k| k as u8),
        1 => any::<u8>(),
    ];
    let len = prop_oneof![
        0..largest() + 64,
        (prop::sample::select(EventKind::ALL.to_vec()), -2..=2isize)
            .prop_map(|(k, d)| layout(k).1.saturating_add_signed(d)),
    ];
    (kind, len)
        .prop_flat_map(|(kind, len)| (Just(kind), vec(any::<u8>(), len)))
        .prop_map(|(kind, mut bytes)| {
            if let Some(first) = bytes.first_mut() {
                *first = kind;
            }
            bytes
        })
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_record_is_an_event_or_an_error(bytes in record()) {
        let decoded = decode(&bytes);
        if bytes.len() < size_of::<EventHeader>() {
            prop_assert_eq!(decoded.err(), Some(DecodeError::NoHeader(bytes.len())));
            return Ok(());
        }
        let Ok(kind) = EventKind::try_from(bytes[0]) else {
            prop_assert_eq!(decoded.err(), Some(DecodeError::UnknownKind(bytes[0])));
            return Ok(());
        };
        let (name, need) = layout(kind);
        if bytes.len() < need {
            prop_assert_eq!(decoded.err(), Some(DecodeError::Short { kind, len: bytes.len(), need }));
            return Ok(());
        }
        let event = decoded.expect("a long enough record of a known kind decodes");
        prop_assert_eq!(variant(&event), name);
        let h = event.header();
        prop_assert_eq!(h.kind, bytes[0]);
        prop_assert_eq!(h.cpu, u32_at(&bytes, offset_of!(EventHeader, cpu)));
        prop_assert_eq!(h.boot_ns, u64_at(&bytes, offset_of!(EventHeader, boot_ns)));
        prop_assert_eq!(h.tgid, u32_at(&bytes, offset_of!(EventHeader, tgid)));
        prop_assert_eq!(h.auid, u32_at(&bytes, offset_of!(EventHeader, auid)));
        prop_assert_eq!(h.cgroup_id, u64_at(&bytes, offset_of!(EventHeader, cgroup_id)));
        let comm = offset_of!(EventHeader, comm);
        prop_assert_eq!(&h.comm[..], &bytes[comm..comm + h.comm.len()]);
    }

    #[test]
    fn kernel_strings_end_at_the_first_nul(buf in vec(any::<u8>(), 0..64)) {
        let s = c_bytes(&buf);
        prop_assert!(!s.contains(&0));
        prop_assert_eq!(buf.get(s.len()).copied().unwrap_or(0), 0);
        prop_assert_eq!(s, &buf[..s.len()]);
    }
}
