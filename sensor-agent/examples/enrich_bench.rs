//! Micro-benchmark of the enrich stage: `cargo run --release -p sensor-agent --example enrich_bench`.
//!
//! Feeds hand-built kernel events attributed to this process (real `/proc`, a real watched
//! file) through `Enricher::enrich` on one thread and prints events per second per kind.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Instant;

use sensor_agent::config::Config;
use sensor_agent::pipeline::decode::Decoded;
use sensor_agent::pipeline::enrich::Enricher;
use sensor_agent::watch::{kernel_dev, Rule, WatchSet};
use sensor_common::{
    syscall::AT_FDCWD, EventHeader, EventKind, FileEvent, MatchKind, OpenSyscall, SyscallEvent,
    COMM_LEN, KEY_DESC_LEN, KEY_TYPE_LEN, NAME_LEN, REQUESTED_LEN,
};

const N: u32 = 1_000_000;

fn header(kind: EventKind, boot_ns: u64) -> EventHeader {
    let pid = std::process::id();
    let ppid = std::os::unix::process::parent_id();
    EventHeader {
        kind: kind as u8,
        _pad0: [0; 3],
        cpu: 0,
        boot_ns,
        tgid: pid,
        tid: pid,
        ppid,
        uid: 0,
        gid: 0,
        euid: 0,
        auid: u32::MAX,
        pid_ns: 0,
        cgroup_id: 0,
        comm: [b'b'; COMM_LEN],
    }
}

fn run(name: &str, enricher: &mut Enricher, make: impl Fn(u64) -> Decoded) {
    let start = Instant::now();
    let mut emitted = 0u32;
    for i in 0..N {
        let event = make(i as u64 * 1_000);
        if enricher.enrich(&event).is_some() {
            emitted += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name:>10}: {:>9.0} events/s ({:.2} µs/event, {emitted} emitted)",
        N as f64 / secs,
        secs * 1e6 / N as f64
    );
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("shadow");
    std::fs::write(&secret, "x").expect("write");
    let meta = std::fs::metadata(&secret).expect("stat");
    let rule = Rule::new(
        secret.to_str().expect("utf-8 path"),
        "password-db",
        None,
        vec![],
    )
    .expect("rule");
    let mut config = Config::load(None).expect("defaults");
    config.watches = vec![rule];
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(WatchSet::resolve(&config.watches)));
    let mut enricher = Enricher::new(&config, rx);

    let mut requested = [0u8; REQUESTED_LEN];
    requested[..11].copy_from_slice(b"/etc/shadow");
    let mut name = [0u8; NAME_LEN];
    name[..6].copy_from_slice(b"shadow");
    let file = |boot_ns| {
        Decoded::File(FileEvent {
            header: header(EventKind::FileOpen, boot_ns),
            ret: 3,
            flags: 0o2000000,
            ino: meta.ino(),
            dev: kernel_dev(meta.dev()),
            rule: 1,
            target_tgid: 0,
            dfd: AT_FDCWD,
            syscall: OpenSyscall::Openat as u8,
            matched: MatchKind::Inode as u8,
            requested_truncated: 0,
            compat: 0,
            overlay_dev: 0,
            name,
            requested,
        })
    };
    let keyctl = |boot_ns| {
        Decoded::Syscall(SyscallEvent {
            header: header(EventKind::Keyctl, boot_ns),
            ret: 0,
            args: [11, 5, 0, 0, 0, 0],
            target_tgid: 0,
            compat: 0,
            target_on_host: 0,
            signal: 0,
            _pad: 0,
            key_type: [0; KEY_TYPE_LEN],
            key_desc: [0; KEY_DESC_LEN],
        })
    };
    run("file_open", &mut enricher, file);
    run("keyctl", &mut enricher, keyctl);
    println!("{:?}", enricher.stats());
}
