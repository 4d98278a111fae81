//! A full disk: the writer keeps running, buffers, then counts, and chains a `loss` event
//! with the counts when writing works again. Needs root for a tiny tmpfs.

mod common;

use std::path::Path;
use std::process::Command;

use sensor_log::{Body, Kind, Timestamp, Verdict};
use sensor_store::{verify, Admission, Filter, LogWriter, Store};

struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn disk_full_is_survived_and_accounted() {
    let Some(fs) = Tmpfs::mount("2m") else {
        return common::precondition_missing("cannot mount a tmpfs (needs root)");
    };
    let state = fs.path().join("state");
    let mut opts = common::options(32);
    opts.max_pending_records = 300;
    let mut w = LogWriter::open(&state, opts).expect("open");
    // Ballast that is deleted later to make room again.
    let ballast = fs.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 600 * 1024]).expect("ballast");

    let mut failures = 0;
    let mut dropped = 0u64;
    let mut i = 0;
    while dropped < 500 {
        let now = Timestamp::now();
        if w.append(common::event(i), now.wall_ns, now.mono_ns)
            .expect("append never fails on a full disk")
            == Admission::Dropped
        {
            dropped += 1;
        }
        if w.seal_due(now).is_err() {
            failures += 1;
        }
        i += 1;
        assert!(i < 200_000, "the disk never filled");
    }
    assert!(failures > 0);
    assert_eq!(w.pending_records(), 300, "the buffer is bounded");
    assert_eq!(w.dropped().values().sum::<u64>(), 500);

    std::fs::remove_file(&ballast).expect("free space");
    w.seal(Timestamp::now()).expect("sealing works again");
    assert_eq!(w.pending_records(), 1, "the loss event is chained first");
    let now = Timestamp::now();
    assert!(matches!(
        w.append(common::event(i), now.wall_ns, now.mono_ns)
            .expect("append"),
        Admission::Chained(_)
    ));
    w.close(Timestamp::now()).expect("close");

    let store = Store::open_read_only(&state).expect("store");
    assert!(matches!(
        verify(&store, None).expect("verify"),
        Verdict::Intact(_)
    ));
    let mut losses = Vec::new();
    store
        .query(
            &Filter {
                kinds: vec![Kind::Loss.as_str().to_string()],
                ..Filter::default()
            },
            |r| {
                if let Body::Event(e) = r.body {
                    losses.extend(e.loss);
                }
                Ok(true)
            },
        )
        .expect("query");
    assert_eq!(losses.len(), 1);
    assert_eq!(losses[0].source, "disk_full");
    assert_eq!(losses[0].total, 500);
    assert_eq!(losses[0].counts.values().sum::<u64>(), 500);
    assert!(losses[0].counts.contains_key("file_open") && losses[0].counts.contains_key("ptrace"));
}
