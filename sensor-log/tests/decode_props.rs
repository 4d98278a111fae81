//! Property tests of the decoders of bytes read from the store, a file or the network:
//! `Record::decode`, `BatchHeader::decode`, a whole batch file read and verified
//! (`BatchFile`), and a stream of forwarding-protocol messages (`forward::Framer`). Whatever the bytes, they return a value or an error: no panic,
//! no endless loop, and no allocation beyond a bound set by the codec's limit, never by a
//! length the bytes claim.
//!
//! The case count is proptest's (256, or `PROPTEST_CASES`); to search longer:
//! `PROPTEST_CASES=100000 cargo test --release -p sensor-log --test decode_props`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::option::of;
use proptest::prelude::*;
use sensor_log::batch_file::{BatchFile, MAGIC};
use sensor_log::forward::{
    encode, BatchMessage, Framer, Hello, Message, Refusal, RefuseCode, DEFAULT_MAX_MESSAGE,
};
use sensor_log::record::{FORMAT_VERSION, FORMAT_VERSION_1, MAX_ENCODED_BYTES};
use sensor_log::{
    Anchor, AnchorBase, BatchHeader, Body, Container, Detail, EndReason, EpochStart, Event,
    FileAccess, Identity, KeyRotation, Kind, Loss, Process, Pruned, Record, RecordHeader,
    SyscallDetail, Target, TpmEntry, TpmQuote, Verdict,
};

/// Counts the bytes each thread holds, so a test can measure the peak a call allocates. A
/// decoder that trusted a length prefix claiming 2^40 bytes would show here (or abort the
/// process), whatever the speed of the machine.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // `try_with`: the allocator is also called while a thread's locals are torn down.
    let _ = LIVE.try_with(|live| {
        live.set(live.get() + delta);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
    });
}

// SAFETY: every call is forwarded to `System` unchanged; the counting beside it only touches
// const-initialised thread locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        // SAFETY: the caller's contract for `dealloc` is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Most a decode may hold at once: serde preallocates a sequence up to 1 MiB whatever its
/// claimed length, and bincode allocates a string only within the remaining 1 MiB limit, so
/// one of each plus the value decoded so far (itself under the limit).
const ALLOCATION_BOUND: isize = 3 * MAX_ENCODED_BYTES as isize;

/// Runs `f` and returns its result with the most bytes it held at once on this thread.
fn peak_of<R>(f: impl FnOnce() -> R) -> (R, isize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let r = f();
    (r, PEAK.with(Cell::get) - start)
}

/// Decodes `bytes` both as a record and as a batch header, checking the allocation bound,
/// and returns the record result.
fn decode_bounded(bytes: &[u8]) -> Result<sensor_log::Result<Record>, TestCaseError> {
    let (record, peak) = peak_of(|| Record::decode(bytes));
    prop_assert!(
        peak <= ALLOCATION_BOUND,
        "Record::decode of {} bytes held {peak} bytes",
        bytes.len()
    );
    let (header, peak) = peak_of(|| BatchHeader::decode(bytes));
    prop_assert!(
        peak <= ALLOCATION_BOUND,
        "BatchHeader::decode of {} bytes held {peak} bytes",
        bytes.len()
    );
    if let Ok(h) = header {
        prop_assert_eq!(sensor_log::codec::encode(&h).expect("re-encodes"), bytes);
    }
    Ok(record)
}

/// Whatever a decode accepts is canonical: it encodes back to exactly the bytes it came
/// from, so no two byte strings (two different signed leaves) read as the same record.
fn check_canonical(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(record) = decode_bounded(bytes)? {
        prop_assert_eq!(record.encode().expect("re-encodes"), bytes);
    }
    Ok(())
}

fn text() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..6).prop_map(String::from_iter)
}

fn process() -> impl Strategy<Value = Process> {
    (any::<[u32; 7]>(), text(), text(), text(), vec(text(), 0..3)).prop_map(
        |([pid, tid, ppid, uid, euid, gid, auid], comm, exe, cmdline, ancestors)| Process {
            pid,
            tid,
            ppid,
            uid,
            euid,
            gid,
            auid,
            comm,
            exe,
            cmdline,
            ancestors,
        },
    )
}

fn identity() -> impl Strategy<Value = Identity> {
    (
        text(),
        of(text()),
        of((text(), text()).prop_map(|(id, runtime)| Container { id, runtime })),
        of(text()),
        any::<bool>(),
        text(),
        of(text()),
    )
        .prop_map(
            |(user, unit, container, pod_uid, human, human_reason, owner)| Identity {
                user,
                unit,
                container,
                pod_uid,
                human,
                human_reason,
                owner,
            },
        )
}

fn file_access() -> impl Strategy<Value = FileAccess> {
    (
        [text(), text(), text(), text(), text(), text()],
        of(text()),
        of(any::<u64>()),
        of(text()),
        any::<bool>(),
    )
        .prop_map(
            |([path, requested, kind, access, flags, syscall], dev, inode, owner, compat)| {
                FileAccess {
                    path,
                    requested,
                    kind,
                    access,
                    flags,
                    syscall,
                    dev,
                    inode,
                    owner,
                    compat,
                }
            },
        )
}

fn syscall_detail() -> impl Strategy<Value = SyscallDetail> {
    (
        of(text()),
        of(any::<i64>()),
        of(text()),
        of(text()),
        of(any::<u64>()),
        of(any::<i32>()),
        any::<bool>(),
    )
        .prop_map(
            |(operation, key_serial, key_type, key_description, bytes, target_fd, compat)| {
                SyscallDetail {
                    operation,
                    key_serial,
                    key_type,
                    key_description,
                    bytes,
                    target_fd,
                    compat,
                }
            },
        )
}

fn event() -> impl Strategy<Value = Event> {
    (
        prop::sample::select(Kind::ALL.to_vec()),
        text(),
        any::<bool>(),
        of(any::<i32>()),
        of(process()),
        of(identity()),
        of(file_access()),
        of((any::<u32>(), of(text())).prop_map(|(pid, exe)| Target { pid, exe })),
        of(syscall_detail()),
        of(
            (text(), btree_map(text(), any::<u64>(), 0..3), any::<u64>()).prop_map(
                |(source, counts, total)| Loss {
                    source,
                    counts,
                    total,
                },
            ),
        ),
        of(detail()),
    )
        .prop_map(
            |(kind, time, ok, errno, process, identity, file, target, syscall, loss, detail)| {
                Event {
                    kind,
                    time,
                    ok,
                    errno,
                    process,
                    identity,
                    file,
                    target,
                    syscall,
                    loss,
                    detail,
                }
            },
        )
}

fn detail() -> impl Strategy<Value = Detail> {
    prop_oneof![
        (any::<u64>(), text(), text()).prop_map(|(count, first, last)| Detail::Repeated {
            count,
            first,
            last
        }),
        (text(), text(), any::<[u64; 2]>()).prop_map(|(directory, rule, [files, watched])| {
            Detail::WatchOverflow {
                directory,
                rule,
                files,
                watched,
            }
        }),
        (
            text(),
            any::<[u64; 2]>(),
            vec(text(), 0..3),
            any::<(bool, i32, bool)>()
        )
            .prop_map(
                |(
                    event_type,
                    [config, sample_type],
                    samples,
                    (reads_user_memory, cpu, system_wide),
                )| {
                    Detail::PerfEventOpen {
                        event_type,
                        config,
                        sample_type,
                        samples,
                        reads_user_memory,
                        cpu,
                        system_wide,
                    }
                }
            ),
        (text(), of(text()), of(text()), of(any::<i32>())).prop_map(
            |(command, prog_type, tracepoint, prog_fd)| Detail::Bpf {
                command,
                prog_type,
                prog_name: None,
                attach_type: tracepoint.clone(),
                tracepoint,
                prog_fd,
                target_fd: prog_fd,
            }
        ),
        any::<[u64; 2]>().prop_map(|[soft, hard]| Detail::CoreLimit { soft, hard }),
        (text(), text(), of(text()), vec(text(), 0..3), any::<u64>()).prop_map(
            |(mark, mask, covers, watched, watched_count)| Detail::FanotifyMark {
                flags: mark.clone(),
                requested: mask.clone(),
                path: covers.clone(),
                mark,
                mask,
                covers,
                watched,
                watched_count,
            }
        ),
        (text(), of(text()), vec(text(), 0..3)).prop_map(|(from, to, flags)| Detail::PathChange {
            from,
            to,
            flags
        }),
    ]
}

fn anchor_base() -> impl Strategy<Value = AnchorBase> {
    (
        any::<u64>(),
        any::<[u32; 5]>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        vec(any::<u8>(), 0..40),
    )
        .prop_map(
            |(
                replay_from,
                [pcr_index, reset_count, restart_count, nv_index, ak_handle],
                pcr_value,
                nv_counter,
                ak_public,
            )| AnchorBase {
                replay_from,
                pcr_index,
                pcr_value,
                reset_count,
                restart_count,
                nv_counter,
                nv_index,
                ak_handle,
                ak_public,
            },
        )
}

fn tpm_entry() -> impl Strategy<Value = TpmEntry> {
    prop_oneof![
        anchor_base().prop_map(TpmEntry::Anchored),
        (any::<u64>(), any::<u64>(), anchor_base()).prop_map(|(gap_from, gap_to, base)| {
            TpmEntry::Resumed {
                gap_from,
                gap_to,
                base,
            }
        }),
        text().prop_map(|reason| TpmEntry::Unanchored { reason }),
        (any::<u64>(), text())
            .prop_map(|(from_batch, error)| TpmEntry::Failing { from_batch, error }),
        (
            any::<u64>(),
            vec(any::<u8>(), 0..40),
            vec(any::<u8>(), 0..70)
        )
            .prop_map(|(batch, attest, signature)| TpmEntry::Quote(TpmQuote {
                batch,
                attest,
                signature
            })),
        (text(), text()).prop_map(|(reason, detail)| TpmEntry::Alarm { reason, detail }),
    ]
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        4 => event().prop_map(Body::Event),
        1 => (
            of(any::<u64>()),
            any::<[u8; 32]>(),
            prop::sample::select(vec![
                EndReason::First,
                EndReason::CleanStop,
                EndReason::Crash,
                EndReason::Reboot,
            ]),
            text(),
        )
            .prop_map(|(previous_epoch, previous_head, reason, boot_id)| {
                Body::EpochStart(EpochStart {
                    previous_epoch,
                    previous_head,
                    reason,
                    boot_id,
                })
            }),
        1 => (any::<[u8; 32]>(), any::<u64>()).prop_map(|(new_public_key, key_epoch)| {
            Body::KeyRotation(KeyRotation {
                new_public_key,
                key_epoch,
            })
        }),
        1 => any::<[u64; 3]>().prop_map(|[up_to_seq, records, batches]| Body::Pruned(Pruned {
            up_to_seq,
            records,
            batches,
        })),
        2 => tpm_entry().prop_map(Body::Tpm),
    ]
}

/// A record of a version a reader knows (1 or 2): a version-1 event has no detail. Other
/// versions are refused, which the byte-level properties reach by changing the first bytes.
fn record() -> impl Strategy<Value = Record> {
    (
        prop::sample::select(vec![FORMAT_VERSION_1, FORMAT_VERSION]),
        any::<[u8; 16]>(),
        any::<[u64; 4]>(),
        body(),
    )
        .prop_map(
            |(version, host_id, [epoch, seq, wall_ns, mono_ns], mut body)| {
                if let Body::Event(e) = &mut body {
                    if version == FORMAT_VERSION_1 {
                        e.detail = None;
                    }
                }
                Record {
                    header: RecordHeader {
                        version,
                        host_id,
                        epoch,
                        seq,
                        wall_ns,
                        mono_ns,
                    },
                    body,
                }
            },
        )
}

fn batch_header() -> impl Strategy<Value = BatchHeader> {
    (
        any::<u16>(),
        any::<[u8; 16]>(),
        any::<[u64; 6]>(),
        any::<[[u8; 32]; 4]>(),
        of(any::<(u32, u64, u32, u32)>()),
    )
        .prop_map(
            |(
                version,
                host_id,
                [epoch, number, first_seq, count, key_epoch, wall_ns],
                [merkle_root, prev_digest, prev_head, chain_head],
                anchor,
            )| BatchHeader {
                version,
                host_id,
                epoch,
                number,
                first_seq,
                count,
                merkle_root,
                prev_digest,
                prev_head,
                chain_head,
                key_epoch,
                wall_ns,
                anchor: anchor.map(
                    |(pcr_index, nv_counter, reset_count, restart_count)| Anchor {
                        pcr_index,
                        nv_counter,
                        reset_count,
                        restart_count,
                    },
                ),
            },
        )
}

/// Length prefixes an attacker may write: far past the limit, and just past it.
const HUGE: [u64; 4] = [u64::MAX, 1 << 40, 1 << 32, MAX_ENCODED_BYTES as u64 + 1];

proptest! {
    // Failures print the shrunk input; no regression file beside an integration test.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn records_round_trip(record in record()) {
        let bytes = record.encode().expect("encodes");
        prop_assert_eq!(&decode_bounded(&bytes)?.expect("decodes"), &record);
        prop_assert_eq!(record.encode().expect("encodes again"), bytes);
    }

    #[test]
    fn batch_headers_round_trip(header in batch_header()) {
        let bytes = sensor_log::codec::encode(&header).expect("encodes");
        prop_assert_eq!(BatchHeader::decode(&bytes).expect("decodes"), header);
    }

    #[test]
    fn arbitrary_bytes_are_a_value_or_an_error(bytes in vec(any::<u8>(), 0..600)) {
        check_canonical(&bytes)?;
    }

    /// A valid prefix followed by noise reaches the decoders' deeper states than pure noise,
    /// which mostly stops at the body tag.
    #[test]
    fn valid_prefix_then_noise(
        record in record(),
        cut in any::<prop::sample::Index>(),
        noise in vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = record.encode().expect("encodes");
        bytes.truncate(cut.index(bytes.len() + 1));
        bytes.extend_from_slice(&noise);
        check_canonical(&bytes)?;
    }

    #[test]
    fn every_one_byte_change_is_a_value_or_an_error(record in record(), value in any::<u8>()) {
        let bytes = record.encode().expect("encodes");
        for at in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[at] = value;
            check_canonical(&changed)?;
        }
    }

    #[test]
    fn every_truncation_is_an_error(record in record()) {
        let bytes = record.encode().expect("encodes");
        for len in 0..bytes.len() {
            prop_assert!(decode_bounded(&bytes[..len])?.is_err(), "{} of {} bytes decoded", len, bytes.len());
        }
    }

    /// A huge number written over any 8 bytes, a length prefix among them, is refused
    /// within the allocation bound, or read as the plain number it then is.
    #[test]
    fn huge_numbers_anywhere_stay_bounded(record in record()) {
        let bytes = record.encode().expect("encodes");
        for at in 0..bytes.len().saturating_sub(7) {
            for huge in HUGE {
                let mut changed = bytes.clone();
                changed[at..at + 8].copy_from_slice(&huge.to_le_bytes());
                check_canonical(&changed)?;
            }
        }
    }
}

/// An intact batch file of the negative-vector corpus: the starting point for changes that
/// reach the batch file reader's and the verifier's deeper states.
const INTACT_FILE: &[u8] = include_bytes!("vectors/intact.batches");

/// Most a batch file read and verification may hold at once: a header, a signature and two
/// record buffers (one looked ahead), each within the 1 MiB item limit, with the decodes of
/// a record and a header within their own bound, and the walk's per-batch leaves.
const FILE_ALLOCATION_BOUND: isize = 4 * MAX_ENCODED_BYTES as isize + ALLOCATION_BOUND;

/// Reads and verifies `bytes` as a batch file: a verdict or an error, never a panic, within
/// the allocation bound.
fn verify_file_bounded(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (result, peak) = peak_of(|| {
        let mut file = BatchFile::read(bytes, bytes)?;
        sensor_log::verify(&mut file, None)
    });
    prop_assert!(
        peak <= FILE_ALLOCATION_BOUND,
        "a batch file of {} bytes held {peak} bytes",
        bytes.len()
    );
    if let Ok(Verdict::Intact(summary)) = result {
        prop_assert!(summary.batches > 0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn batch_file_noise_is_a_verdict_or_an_error(noise in vec(any::<u8>(), 0..600)) {
        let mut bytes = INTACT_FILE[..MAGIC.len() + 2].to_vec();
        bytes.extend_from_slice(&noise);
        verify_file_bounded(&bytes)?;
        verify_file_bounded(&noise)?;
    }

    #[test]
    fn batch_file_changes_are_a_verdict_or_an_error(
        changes in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        huge in any::<prop::sample::Index>(),
    ) {
        let mut bytes = INTACT_FILE.to_vec();
        for (at, value) in changes {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        verify_file_bounded(&bytes)?;
        // A huge length anywhere is refused before it is allocated.
        let at = huge.index(bytes.len() - 3);
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        verify_file_bounded(&bytes)?;
        bytes.truncate(cut.index(bytes.len() + 1));
        verify_file_bounded(&bytes)?;
    }
}

/// Feeds `bytes` to a forwarding-protocol framer in `chunk`-byte pieces and takes every
/// message out: messages or one error, never a panic, within the allocation bound (the
/// framer holds the input; a decode holds at most a frame's worth).
fn frame_bounded(bytes: &[u8], chunk: usize) -> Result<(), TestCaseError> {
    let (_, peak) = peak_of(|| {
        let mut framer = Framer::new(DEFAULT_MAX_MESSAGE);
        for part in bytes.chunks(chunk.max(1)) {
            framer.push(part);
            loop {
                match framer.next_message() {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
        }
        let _ = framer.finish();
    });
    prop_assert!(
        peak <= 4 * bytes.len() as isize + 4096,
        "framing {} bytes held {peak} bytes",
        bytes.len()
    );
    Ok(())
}

/// A valid stream of every kind of message, to change.
fn forward_stream() -> Vec<u8> {
    let mut out = Vec::new();
    let messages = [
        Message::Hello(Hello {
            host_id: [1; 16],
            agent_version: "v".into(),
            oldest: 1,
            newest: 2,
            keys: vec![(1, [2; 32])],
        }),
        Message::Batch(BatchMessage {
            header: vec![3; 40],
            signature: vec![4; 64],
            records: vec![vec![5; 20], vec![6; 3]],
        }),
        Message::Ack(7),
        Message::Refuse(Refusal {
            batch: 8,
            expected: 9,
            code: RefuseCode::Fork,
            reason: "r".into(),
        }),
    ];
    for m in &messages {
        encode(m, &mut out).expect("encodes");
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn forward_noise_is_messages_or_an_error(bytes in vec(any::<u8>(), 0..600), chunk in 1..64usize) {
        frame_bounded(&bytes, chunk)?;
    }

    #[test]
    fn forward_changes_are_messages_or_an_error(
        changes in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        chunk in 1..64usize,
    ) {
        let mut bytes = forward_stream();
        for (at, value) in changes {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        frame_bounded(&bytes, chunk)?;
    }
}

/// A record with every length-prefixed field (strings, sequences, the map, byte vectors)
/// holding distinct content, so each prefix can be found in the encoding.
fn every_prefixed_field() -> Vec<(Record, Vec<Vec<u8>>)> {
    let header = RecordHeader {
        version: FORMAT_VERSION,
        host_id: [0x11; 16],
        epoch: 1,
        seq: 2,
        wall_ns: 3,
        mono_ns: 4,
    };
    let s = |v: &str| v.to_string();
    let event = Event {
        kind: Kind::Keyctl,
        time: s("time-0"),
        ok: true,
        errno: Some(1),
        process: Some(Process {
            comm: s("comm-1"),
            exe: s("exe-2"),
            cmdline: s("cmdline-3"),
            ancestors: vec![s("ancestor-4"), s("ancestor-5")],
            ..Process::default()
        }),
        identity: Some(Identity {
            user: s("user-6"),
            unit: Some(s("unit-7")),
            container: Some(Container {
                id: s("id-8"),
                runtime: s("runtime-9"),
            }),
            pod_uid: Some(s("pod-10")),
            human: true,
            human_reason: s("reason-11"),
            owner: Some(s("owner-12")),
        }),
        file: Some(FileAccess {
            path: s("path-13"),
            requested: s("requested-14"),
            kind: s("kind-15"),
            access: s("access-16"),
            flags: s("flags-17"),
            syscall: s("syscall-18"),
            dev: Some(s("dev-19")),
            inode: Some(20),
            owner: Some(s("owner-21")),
            compat: false,
        }),
        target: Some(Target {
            pid: 22,
            exe: Some(s("exe-23")),
        }),
        syscall: Some(SyscallDetail {
            operation: Some(s("op-24")),
            key_type: Some(s("type-25")),
            key_description: Some(s("desc-26")),
            ..SyscallDetail::default()
        }),
        loss: Some(Loss {
            source: s("source-27"),
            counts: BTreeMap::from([(s("count-28"), 1)]),
            total: 1,
        }),
        detail: Some(Detail::WatchOverflow {
            directory: s("directory-29"),
            rule: s("rule-30"),
            files: 2,
            watched: 1,
        }),
    };
    let event_fields = [
        "time-0",
        "comm-1",
        "exe-2",
        "cmdline-3",
        "ancestor-4",
        "ancestor-5",
        "user-6",
        "unit-7",
        "id-8",
        "runtime-9",
        "pod-10",
        "reason-11",
        "owner-12",
        "path-13",
        "requested-14",
        "kind-15",
        "access-16",
        "flags-17",
        "syscall-18",
        "dev-19",
        "owner-21",
        "exe-23",
        "op-24",
        "type-25",
        "desc-26",
        "source-27",
        "count-28",
        "directory-29",
        "rule-30",
    ];
    let base = AnchorBase {
        replay_from: 1,
        pcr_index: 14,
        pcr_value: [0; 32],
        reset_count: 1,
        restart_count: 0,
        nv_counter: 1,
        nv_index: 1,
        ak_handle: 1,
        ak_public: b"ak-public".to_vec(),
    };
    let quote = TpmQuote {
        batch: 1,
        attest: b"attest-bytes".to_vec(),
        signature: b"signature-bytes".to_vec(),
    };
    let record = |body| Record { header, body };
    let content = |fields: &[&str]| fields.iter().map(|f| f.as_bytes().to_vec()).collect();
    let repeated = Event {
        detail: Some(Detail::Repeated {
            count: 3,
            first: s("first-31"),
            last: s("last-32"),
        }),
        ..event.clone()
    };
    vec![
        (record(Body::Event(event)), content(&event_fields)),
        (
            record(Body::Event(repeated)),
            content(&["first-31", "last-32"]),
        ),
        (
            record(Body::EpochStart(EpochStart {
                previous_epoch: Some(1),
                previous_head: [0; 32],
                reason: EndReason::Crash,
                boot_id: s("boot-id"),
            })),
            content(&["boot-id"]),
        ),
        (
            record(Body::Tpm(TpmEntry::Resumed {
                gap_from: 1,
                gap_to: 2,
                base,
            })),
            content(&["ak-public"]),
        ),
        (
            record(Body::Tpm(TpmEntry::Quote(quote))),
            content(&["attest-bytes", "signature-bytes"]),
        ),
        (
            record(Body::Tpm(TpmEntry::Alarm {
                reason: s("alarm-reason"),
                detail: s("alarm-detail"),
            })),
            content(&["alarm-reason", "alarm-detail"]),
        ),
    ]
}

/// The attack the limit exists for, at every length prefix of the format: each claimed
/// length far past the limit is refused, and the refusal allocates no more than the bound.
#[test]
fn huge_length_prefixes_are_refused_without_allocating() {
    for (record, fields) in every_prefixed_field() {
        let bytes = record.encode().expect("encodes");
        for field in fields {
            let mut prefixed = (field.len() as u64).to_le_bytes().to_vec();
            prefixed.extend_from_slice(&field);
            let at = bytes
                .windows(prefixed.len())
                .position(|w| w == prefixed)
                .expect("the field's length prefix is in the encoding");
            for huge in HUGE {
                let mut changed = bytes.clone();
                changed[at..at + 8].copy_from_slice(&huge.to_le_bytes());
                let (decoded, peak) = peak_of(|| Record::decode(&changed));
                assert!(
                    decoded.is_err(),
                    "a {huge}-byte length for {} decoded",
                    String::from_utf8_lossy(&field)
                );
                assert!(
                    peak <= ALLOCATION_BOUND,
                    "a {huge}-byte length for {} held {peak} bytes",
                    String::from_utf8_lossy(&field)
                );
            }
        }
    }
}

/// The measurement is real: a decode that allocates shows a peak above zero (else every
/// bound above would hold trivially).
#[test]
fn the_counting_allocator_sees_a_decode_allocate() {
    let (record, peak) = peak_of(|| {
        let bytes = every_prefixed_field()[0].0.encode().expect("encodes");
        Record::decode(&bytes).expect("decodes")
    });
    assert!(peak > 0, "the allocator counts what a decode holds");
    drop(record);
}

/// What the canonical-decode properties found: a `loss` event's counts map with a repeated
/// or unordered key used to decode (into a different map, hiding the first count of a
/// repeated key), so two byte strings read as one record. Both are refused now.
#[test]
fn loss_counts_with_a_repeated_or_unordered_key_are_refused() {
    let counts = BTreeMap::from([("k1".to_string(), 1), ("k2".to_string(), 2)]);
    let record = Record {
        header: every_prefixed_field()[0].0.header,
        body: Body::Event(Event::loss("src", counts, 1)),
    };
    let bytes = record.encode().expect("encodes");
    assert_eq!(Record::decode(&bytes).expect("decodes"), record);
    let second = bytes
        .windows(2)
        .rposition(|w| w == b"k2")
        .expect("second key");
    for (name, key) in [("repeated", b"k1"), ("unordered", b"k0")] {
        let mut changed = bytes.clone();
        changed[second..second + 2].copy_from_slice(key);
        let err = Record::decode(&changed).expect_err(name);
        assert!(err.to_string().contains("ascending"), "{name}: {err}");
    }
}
