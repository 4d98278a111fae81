//! The kinds' numbers are the kernel ABI and their names the output's: both are derived, and
//! this pins what the derivation gives, so a renamed variant is a failing test, not a silent
//! change of the log's or the loss reports' names.

use sensor_common::{EventKind, FileHandleHeader, MatchKind, OpenSyscall, UnknownKind};

#[test]
fn event_kind_numbers_and_names() {
    let expected = [
        (1, "file_open"),
        (2, "proc_access"),
        (3, "ptrace"),
        (4, "process_vm_readv"),
        (5, "process_vm_writev"),
        (6, "pidfd_getfd"),
        (7, "keyctl"),
        (8, "add_key"),
        (9, "request_key"),
        (10, "io_uring"),
        (11, "exec"),
        (12, "fork"),
        (13, "exit"),
        (14, "perf_event_open"),
        (15, "bpf"),
        (16, "prlimit64"),
        (17, "fanotify_mark"),
        (18, "tracefs_write"),
        (19, "core_pattern_write"),
        (20, "file_rename"),
        (21, "file_unlink"),
        (22, "file_link"),
        (23, "core_signal"),
    ];
    let got: Vec<_> = EventKind::ALL
        .iter()
        .map(|&k| (k as u8, k.name()))
        .collect();
    assert_eq!(got, expected);
    for (byte, _) in expected {
        assert_eq!(EventKind::try_from(byte).map(|k| k as u8), Ok(byte));
    }
    for byte in [0, 24, 255] {
        assert_eq!(EventKind::try_from(byte), Err(UnknownKind(byte)));
    }
    assert_eq!(EventKind::COUNT, 24);
}

#[test]
fn open_syscall_names_and_match_kinds() {
    let names: Vec<_> = (0..=9)
        .map(|b| OpenSyscall::try_from(b).map(OpenSyscall::name).ok())
        .collect();
    assert_eq!(
        names,
        [
            None,
            Some("open"),
            Some("openat"),
            Some("openat2"),
            Some("creat"),
            Some("open_by_handle_at"),
            Some("io_uring"),
            Some("exec"),
            Some("kernel"),
            None
        ]
    );
    assert_eq!(MatchKind::try_from(5), Ok(MatchKind::Proc));
    assert_eq!(MatchKind::try_from(6), Ok(MatchKind::Tracefs));
    assert_eq!(MatchKind::try_from(7), Ok(MatchKind::CorePattern));
    assert_eq!(MatchKind::try_from(8), Ok(MatchKind::Tree));
    assert_eq!(MatchKind::try_from(9), Ok(MatchKind::DeniedHandle));
    assert_eq!(MatchKind::try_from(10), Err(UnknownKind(10)));
    // The kernel's `struct file_handle` header, copied as is into a denied attempt's event.
    assert_eq!(std::mem::size_of::<FileHandleHeader>(), 8);
}
