//! Cost of one extend, one NV increment and one quote against a fresh swtpm.
//!
//! `cargo run --release -p sensor-tpm --example bench [-- ROUNDS [PCR]]` (swtpm must be installed:
//! `cargo xtask setup`). Hardware TPMs are far slower, NV writes and quotes most of all.

use std::time::{Duration, Instant};

use sensor_tpm::{TpmConfig, TpmWorker};
use swtpm_harness::Swtpm;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200)
        .clamp(1, 100_000);
    let pcr: u32 = std::env::args()
        .nth(2)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(sensor_tpm::DEFAULT_PCR);
    let dir = tempfile::tempdir()?;
    let tpm = Swtpm::start(dir.path())?;
    let worker = TpmWorker::start(TpmConfig {
        tcti: Some(tpm.tcti()),
        pcr,
        ..TpmConfig::default()
    })?;
    let t = Instant::now();
    let info = worker.connect()?;
    println!(
        "first connect (creates AK, defines counter): {:?} (AK created: {})",
        t.elapsed(),
        info.ak_created
    );

    let extend = time(rounds, |i| worker.extend([i as u8; 32]).map(drop))?;
    let pcr_read = time(rounds, |_| worker.pcr_read().map(drop))?;
    let nv = time(rounds, |_| worker.advance_counter().map(drop))?;
    let quote = time(rounds, |i| worker.quote([i as u8; 32]).map(drop))?;
    println!("rounds: {rounds}, pcr: {pcr}");
    for (name, d) in [
        ("extend", extend),
        ("pcr_read", pcr_read),
        ("nv increment (+read)", nv),
        ("quote (+pcr_read)", quote),
    ] {
        println!("{name:>22}: {:>9.3} ms/op", d.as_secs_f64() * 1e3);
    }
    Ok(())
}

fn time(
    rounds: u32,
    mut f: impl FnMut(u32) -> sensor_tpm::Result<()>,
) -> sensor_tpm::Result<Duration> {
    let t = Instant::now();
    for i in 0..rounds {
        f(i)?;
    }
    Ok(t.elapsed() / rounds)
}
