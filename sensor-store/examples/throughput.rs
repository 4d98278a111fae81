//! Durable throughput of chain + sign + store, and verify speed, on a real store.
//!
//! `cargo run --release -p sensor-store --example throughput -- [RECORDS] [DIR]`
//! (defaults: 1000000 records, a fresh temp dir). Figures go to docs/performance.md.

use std::time::Instant;

use sensor_log::batch_file::BatchFile;
use sensor_log::{Event, FileAccess, Identity, Kind, Process, Timestamp, Verdict};
use sensor_store::{verify, LogWriter, Store, WriterOptions};

/// Consecutive events from the same process. Credential reads come in bursts from one
/// process (a tool opening several files, a scan); the pid index is the one whose inserts
/// scatter, so this sets how many of its pages a batch dirties. Override with PID_RUN=N.
const PID_RUN: u64 = 64;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let records: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let temp = tempfile::tempdir()?;
    let dir = args
        .next()
        .map_or_else(|| temp.path().to_path_buf(), std::path::PathBuf::from);

    let template = Event {
        kind: Kind::FileOpen,
        time: "2025-01-31T12:00:00.123456789Z".to_string(),
        ok: true,
        errno: None,
        process: Some(Process {
            pid: 4242,
            exe: "/usr/bin/ssh".to_string(),
            comm: "ssh".to_string(),
            cmdline: "ssh -i /home/alice/.ssh/id_ed25519 host".to_string(),
            ancestors: vec![
                "bash".to_string(),
                "sshd".to_string(),
                "systemd".to_string(),
            ],
            ..Process::default()
        }),
        identity: Some(Identity {
            user: "alice".to_string(),
            unit: Some("session-3.scope".to_string()),
            human: true,
            human_reason: "login uid 1000 set".to_string(),
            ..Identity::default()
        }),
        file: Some(FileAccess {
            path: "/home/alice/.ssh/id_ed25519".to_string(),
            requested: "/home/alice/.ssh/id_ed25519".to_string(),
            kind: "ssh-key".to_string(),
            access: "read".to_string(),
            flags: "O_RDONLY|O_CLOEXEC".to_string(),
            syscall: "openat".to_string(),
            dev: Some("8:1".to_string()),
            inode: Some(1234),
            owner: None,
            compat: false,
        }),
        target: None,
        syscall: None,
        loss: None,
        detail: None,
    };

    let pid_run: u64 = std::env::var("PID_RUN")
        .ok()
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(PID_RUN)
        .max(1);
    let mut writer = LogWriter::open(&dir, WriterOptions::default())?;
    let start = Instant::now();
    let mut batches = 0;
    for i in 0..records {
        let now = Timestamp::now();
        let mut event = template.clone();
        if let Some(p) = event.process.as_mut() {
            p.pid = 4000 + u32::try_from((i / pid_run) % 1000)?;
        }
        writer.append(event, now.wall_ns, now.mono_ns)?;
        batches += writer.seal_due(now)?.len();
    }
    batches += writer.seal(Timestamp::now())?.len();
    let write = start.elapsed();
    writer.close(Timestamp::now())?;
    println!(
        "write: {records} records, {batches} batches, durable in {:.2} s = {:.0} records/s",
        write.as_secs_f64(),
        records as f64 / write.as_secs_f64()
    );

    let store = Store::open_read_only(&dir)?;
    let start = Instant::now();
    let verdict = verify(&store, None)?;
    let took = start.elapsed();
    let Verdict::Intact(summary) = verdict else {
        return Err(format!("{verdict:?}").into());
    };
    println!(
        "verify: {} records, {} batches in {:.2} s = {:.0} records/s",
        summary.records,
        summary.batches,
        took.as_secs_f64(),
        summary.records as f64 / took.as_secs_f64()
    );

    // The same log as a batch file (what a collector or `verify --file` reads): the signed
    // bytes alone, without the store's own checks.
    let path = dir.join("export.batches");
    let _ = std::fs::remove_file(&path);
    store.export(std::io::BufWriter::new(std::fs::File::create(&path)?))?;
    let start = Instant::now();
    let verdict = sensor_log::verify(&mut BatchFile::open(&path)?, None)?;
    let took = start.elapsed();
    std::fs::remove_file(&path)?;
    let Verdict::Intact(summary) = verdict else {
        return Err(format!("{verdict:?}").into());
    };
    println!(
        "verify --file: {} records in {:.2} s = {:.0} records/s",
        summary.records,
        took.as_secs_f64(),
        summary.records as f64 / took.as_secs_f64()
    );
    Ok(())
}
