//! Cost of one watched-set resolution beside a crowded glob directory:
//! `cargo run --release -p sensor-agent --example resolve_cost [FILES]` (default 20,000).
//!
//! Every refresh re-resolves every rule, so this is what each refresh costs while a user
//! keeps that many files in a watched directory: with the kernel's budget, and without the
//! per-directory bound (every file resolved, as before the bound existed), in one run.

use std::time::{Duration, Instant};

use sensor_agent::watch::{Budget, Rule, WatchSet};

const RUNS: usize = 7;

fn main() {
    let files: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("FILES is a number"))
        .unwrap_or(20_000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = tmp.path().join("home/mallory/.aws/sso/cache");
    std::fs::create_dir_all(&cache).expect("mkdir");
    for i in 0..files {
        std::fs::write(cache.join(format!("token-{i}.json")), b"{}").expect("write");
    }
    let pattern = format!("{}/home/*/.aws/sso/cache/*", tmp.path().display());
    let rules = [Rule::new(&pattern, "cloud", None, Vec::new()).expect("rule")];
    let unbounded = Budget {
        per_dir: usize::MAX,
        ..Budget::KERNEL
    };
    // Alternating, so both see the same machine state.
    let mut bounded_times = Vec::new();
    let mut unbounded_times = Vec::new();
    for _ in 0..RUNS {
        bounded_times.push(time(&rules, Budget::KERNEL));
        unbounded_times.push(time(&rules, unbounded));
    }
    for (name, budget, times) in [
        (
            "bounded (256 per directory)",
            Budget::KERNEL,
            &mut bounded_times,
        ),
        ("unbounded (every file)", unbounded, &mut unbounded_times),
    ] {
        times.sort();
        let set = WatchSet::resolve_within(&rules, budget);
        println!(
            "{files} files, {name}: median {:.1} ms (min {:.1}, max {:.1}, {RUNS} runs), {} inode entries",
            ms(times[RUNS / 2]),
            ms(times[0]),
            ms(times[RUNS - 1]),
            set.inodes().len()
        );
    }
}

fn time(rules: &[Rule], budget: Budget) -> Duration {
    let start = Instant::now();
    let set = WatchSet::resolve_within(rules, budget);
    let took = start.elapsed();
    std::hint::black_box(set.inodes().len());
    took
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
