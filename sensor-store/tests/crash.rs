//! kill -9 at any time loses nothing sealed; the restart continues the chain and says Crash.

mod common;

use std::process::Command;
use std::time::Duration;

use sensor_log::{Body, EndReason, Timestamp, Verdict};
use sensor_store::{verify, Filter, LogWriter, Store};

const CHILD_DIR: &str = "SENSOR_LOG_CRASH_CHILD_DIR";

/// Runs as the child when the environment names a directory: writes until killed.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let mut opts = common::options(64);
    opts.batch_interval = Duration::from_millis(20);
    let mut w = LogWriter::open(std::path::Path::new(&dir), opts).expect("open");
    for i in 0.. {
        let now = Timestamp::now();
        w.append(common::event(i), now.wall_ns, now.mono_ns)
            .expect("append");
        w.seal_due(now).expect("seal");
    }
}

#[test]
fn kill_9_loses_nothing_sealed() {
    let dir = tempfile::tempdir().expect("tempdir");
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "crash_child", "--nocapture"])
            .env(CHILD_DIR, dir.path())
            .spawn()
            .expect("spawn child");
        std::thread::sleep(Duration::from_millis(700 + 150 * round));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
    let w = LogWriter::open(dir.path(), common::options(64)).expect("reopen");
    w.close(Timestamp::now()).expect("close");

    let store = Store::open_read_only(dir.path()).expect("store");
    let Verdict::Intact(summary) = verify(&store, None).expect("verify") else {
        panic!("log broken after kill -9")
    };
    assert!(
        summary.records > 100,
        "the children wrote something: {summary:?}"
    );
    assert_eq!(summary.epochs, 4);

    let mut seqs = Vec::new();
    let mut reasons = Vec::new();
    store
        .query(&Filter::default(), |r| {
            seqs.push(r.header.seq);
            if let Body::EpochStart(s) = r.body {
                reasons.push(s.reason);
            }
            Ok(true)
        })
        .expect("query");
    assert!(
        seqs.iter().copied().eq(1..=seqs.len() as u64),
        "contiguous, no repeats"
    );
    assert_eq!(
        reasons,
        [
            EndReason::First,
            EndReason::Crash,
            EndReason::Crash,
            EndReason::Crash
        ]
    );
}
