//! Helpers shared by the integration tests: realistic events and a writer in a temp dir.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;
use std::time::Duration;

use sensor_log::{Event, FileAccess, Identity, Kind, Process, Timestamp};
use sensor_store::{tamper, LogWriter, WriterOptions};

pub fn event(i: u64) -> Event {
    Event {
        kind: if i % 5 == 4 {
            Kind::Ptrace
        } else {
            Kind::FileOpen
        },
        time: sensor_log::time::rfc3339(1_700_000_000_000_000_000 + i),
        ok: true,
        errno: None,
        process: Some(Process {
            pid: 1000 + u32::try_from(i % 7).unwrap_or(0),
            tid: 1000,
            ppid: 1,
            uid: 1000,
            euid: 1000,
            gid: 1000,
            auid: if i.is_multiple_of(2) { 1000 } else { u32::MAX },
            comm: "cat".to_string(),
            exe: if i.is_multiple_of(3) {
                "/usr/bin/cat".to_string()
            } else {
                "/usr/bin/ssh".to_string()
            },
            cmdline: format!("cat /home/alice/.ssh/id_ed25519 {i}"),
            ancestors: vec![
                "bash".to_string(),
                "sshd".to_string(),
                "systemd".to_string(),
            ],
        }),
        identity: Some(Identity {
            user: if i.is_multiple_of(2) {
                "alice".to_string()
            } else {
                "backup".to_string()
            },
            unit: Some(
                if i.is_multiple_of(2) {
                    "session-3.scope"
                } else {
                    "backup.service"
                }
                .to_string(),
            ),
            container: None,
            pod_uid: None,
            human: i.is_multiple_of(2),
            human_reason: "login uid set".to_string(),
            owner: Some("platform-team".to_string()),
        }),
        file: Some(FileAccess {
            path: if i.is_multiple_of(2) {
                "/home/alice/.ssh/id_ed25519".to_string()
            } else {
                "/etc/shadow".to_string()
            },
            requested: "~/.ssh/id_ed25519".to_string(),
            kind: if i.is_multiple_of(2) {
                "ssh-key"
            } else {
                "password-db"
            }
            .to_string(),
            access: "read".to_string(),
            flags: "O_RDONLY|O_CLOEXEC".to_string(),
            syscall: "openat".to_string(),
            dev: Some("8:1".to_string()),
            inode: Some(1234 + i),
            owner: None,
            compat: false,
        }),
        target: None,
        syscall: None,
        loss: None,
        detail: None,
    }
}

pub fn options(batch: usize) -> WriterOptions {
    WriterOptions {
        batch_max_records: batch,
        batch_interval: Duration::from_secs(3600),
        ..WriterOptions::default()
    }
}

/// Opens a writer, appends `n` events sealing as batches fill, and closes it.
pub fn write_log(dir: &Path, n: u64, batch: usize) {
    let mut w = LogWriter::open(dir, options(batch)).expect("open");
    for i in 0..n {
        let now = Timestamp::now();
        w.append(event(i), now.wall_ns, now.mono_ns)
            .expect("append");
        w.seal_due(now).expect("seal_due");
    }
    w.close(Timestamp::now()).expect("close");
}

/// A log of 1 EpochStart + 100 events in batches of 8, in a fresh directory: the log the
/// tamper, batch-file and outbox tests attack.
pub fn written() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 100, 8);
    dir
}

/// A read-write connection to the store in `dir`, as an attacker with root opens it.
pub fn db(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("log.db")).expect("open db")
}

/// Flips one bit near the end of record `seq`'s bytes in the store (an event field, so the
/// record still decodes) and returns the changed bytes.
pub fn flip_record_bit(conn: &rusqlite::Connection, seq: i64) -> Vec<u8> {
    let mut changed = Vec::new();
    tamper::edit_rows(conn, |rows| {
        let bytes = &mut tamper::row(rows, seq).bytes;
        let last = bytes.len() - 20;
        bytes[last] ^= 0x01;
        changed = bytes.clone();
    });
    changed
}

/// A test whose precondition (root, a tool) is missing: skipped on a developer's machine,
/// a failure in CI (`CI=true`), where it must run.
pub fn precondition_missing(what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI must run this test: {what}");
    }
    eprintln!("skipped: {what}");
}
