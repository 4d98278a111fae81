//! What TPM anchoring at the default cadence costs the durable throughput: the log writer's
//! storm loop (chain, sign, store; 1024-record batches) with and without the anchor stage
//! extending every sealed batch into a real swtpm, runs alternated.
//!
//! `cargo run --release -p sensor-agent --example anchor_cost -- [RECORDS] [ROUNDS]`
//! (defaults: 300000 records, 3 rounds). Figures go to docs/tpm.md and docs/performance.md.

use std::{sync::Arc, time::Instant};

use sensor_agent::pipeline::{
    anchor::{AnchorStage, Note, QUEUE_BATCHES},
    Counters,
};
use sensor_log::{Event, FileAccess, Kind, Process, SealedBatch, Timestamp};
use sensor_store::{LogWriter, WriterOptions};
use sensor_tpm::TpmConfig;
use swtpm_harness::Swtpm;
use tokio::sync::mpsc;

fn event(i: u64) -> Event {
    Event {
        kind: Kind::FileOpen,
        time: "2025-01-31T12:00:00.123456789Z".to_string(),
        ok: true,
        errno: None,
        process: Some(Process {
            pid: 4000 + (i / 64 % 1000) as u32,
            exe: "/usr/bin/ssh".to_string(),
            ..Process::default()
        }),
        identity: None,
        file: Some(FileAccess {
            path: "/home/alice/.ssh/id_ed25519".to_string(),
            ..FileAccess::default()
        }),
        target: None,
        syscall: None,
        loss: None,
        detail: None,
    }
}

/// One storm: records per second, batches sealed, and with a TPM the last extended batch and
/// the TPM commands sent. Sealed batches go to the anchor stage as the chain stage hands them
/// on (`try_send`), and its notes are applied as the chain stage does, between appends.
fn storm(
    records: u64,
    tpm: Option<&Swtpm>,
    runtime: &tokio::runtime::Runtime,
) -> Result<(f64, u64, u64, u64), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut writer = LogWriter::open(dir.path(), WriterOptions::default())?;
    let counters = Arc::new(Counters::default());
    let (tx, rx) = mpsc::channel::<SealedBatch>(QUEUE_BATCHES);
    let link = tpm.map(|tpm| {
        let config = TpmConfig {
            tcti: Some(tpm.tcti()),
            ..TpmConfig::default()
        };
        let (stage, link) = AnchorStage::start(
            Some(config),
            dir.path().to_path_buf(),
            writer.next_batch(),
            counters.clone(),
        );
        let handle = runtime.handle().clone();
        // As on the agent's blocking-task thread: inside the runtime's context.
        let thread = std::thread::spawn(move || {
            let _context = handle.enter();
            stage.run(handle.clone(), rx)
        });
        (link, thread)
    });
    let start = Instant::now();
    let mut batches = 0;
    let apply = |writer: &mut LogWriter| {
        if let Some((link, _)) = &link {
            for note in link.notes() {
                match note {
                    Note::Anchor(a) => writer.set_anchor(a),
                    Note::Chain(e) => {
                        let _ = writer.record_tpm(e, Timestamp::now());
                    }
                }
            }
        }
    };
    for i in 0..records {
        let now = Timestamp::now();
        writer.append(event(i), now.wall_ns, now.mono_ns)?;
        if i % 256 == 0 {
            apply(&mut writer);
        }
        for b in writer.seal_due(now)? {
            batches += 1;
            let _ = tx.try_send(b);
        }
    }
    for b in writer.seal(Timestamp::now())? {
        batches += 1;
        let _ = tx.try_send(b);
    }
    let elapsed = start.elapsed().as_secs_f64();
    drop(tx);
    if let Some((_, thread)) = link {
        let _ = thread.join();
    }
    writer.close(Timestamp::now())?;
    let anchor = counters
        .anchor
        .lock()
        .map(|a| a.clone())
        .unwrap_or_default();
    Ok((
        records as f64 / elapsed,
        batches,
        anchor.last_extended_batch.unwrap_or(0),
        anchor.tpm_commands,
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let records: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(300_000);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    std::env::set_var("TSS2_LOG", "all+none");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let tpm_dir = tempfile::tempdir()?;
    let tpm = Swtpm::start(tpm_dir.path())?;
    let (mut plain, mut anchored) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let (p, batches, ..) = storm(records, None, &runtime)?;
        let (a, _, extended, commands) = storm(records, Some(&tpm), &runtime)?;
        println!(
            "round {round}: without anchoring {p:.0} records/s, with anchoring {a:.0} records/s ({batches} batches, last extended batch {extended}, {commands} TPM commands)"
        );
        plain.push(p);
        anchored.push(a);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (p, a) = (mean(&plain), mean(&anchored));
    println!(
        "mean: without {p:.0} records/s, with {a:.0} records/s: anchoring costs {:+.2} % of the durable throughput",
        100.0 * (p - a) / p
    );
    Ok(())
}
