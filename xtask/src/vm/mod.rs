//! `cargo xtask vm-test`: the integration tests inside other kernels. Each kernel is a
//! Debian package (5.10, 6.1, 6.12) booted by qemu under TCG with a swtpm, the host's root
//! file system shared read-only (writes go to guest memory), and the BPF LSM active. In the
//! guest, per probe mode, the agent's `probe` subcommand and the `sensor-tests` test
//! binaries run as root; the results come back through a small 9p share and end in a table.
//! Downloads, unpacked kernels and initramfs images are cached in `target/vm/`; each guest's
//! console and results are kept in `target/vm/logs/KERNEL/`. See docs/vm-lane.md.

mod guest;
mod initramfs;
mod kernel;

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use guest::End;
use kernel::SUITES;

/// `cargo xtask vm-test` options.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// A kernel to boot: 5.10 (Debian 11), 6.1 (Debian 12) or 6.12 (Debian 13); repeatable.
    /// Default: all three.
    #[arg(long = "kernel", value_name = "NAME")]
    pub kernels: Vec<String>,
    /// A probe mode (SENSOR_TEST_PROBE_MODE, `sensor-agent probe --probe-mode`); repeatable.
    /// Default: auto and tracepoint.
    #[arg(long = "mode", value_name = "MODE")]
    pub modes: Vec<String>,
    /// An integration test target of sensor-tests (tests/tests/NAME.rs); repeatable.
    /// Default: kernel_events.
    #[arg(long = "test", value_name = "NAME")]
    pub tests: Vec<String>,
    /// Seconds each guest may take, from qemu's start to its power-off; then it is killed.
    #[arg(long, value_name = "SECS", default_value_t = 1200)]
    pub timeout: u64,
    /// Echo each guest's serial console while it runs.
    #[arg(long)]
    pub verbose: bool,
    /// Also run `bpftool feature probe kernel` in each guest and report which program types
    /// load (about a minute per guest under TCG).
    #[arg(long)]
    pub feature_probe: bool,
    /// After the tests, run the probe modes' overhead benchmark in each guest
    /// (xtask/bench/guest_overhead.sh, for the modes given) and print its figures.
    #[arg(long)]
    pub bench: bool,
    /// Give each guest qemu's instruction counter as its clock (`-icount shift=SHIFT`, one
    /// vCPU): a guest nanosecond is then 2^SHIFT instructions, so the benchmark's
    /// wall-clock ratios count the instructions an open costs, free of the host's noise.
    /// The benchmark only: no test runs, since the guest's clock leaps while it waits on the
    /// host (the TPM), which makes the tests' time limits meaningless.
    #[arg(long, value_name = "SHIFT", requires = "bench", conflicts_with = "tests", value_parser = clap::value_parser!(u8).range(0..=10))]
    pub icount: Option<u8>,
}

pub const DEFAULT_MODES: &[&str] = &["auto", "tracepoint"];
pub const DEFAULT_TESTS: &[&str] = &["kernel_events"];

/// The VM lanes that `cargo xtask test` runs after the host tests, in the same process, one
/// after the other: edit their kernels, modes or tests here. `SENSOR_VM_LANE=0` skips them
/// for quick local runs; the default, and CI, run them.
pub fn test_task_lanes() -> Vec<Args> {
    let lane = |kernels: &[&str], modes: &[&str], tests: &[&str]| Args {
        kernels: kernels.iter().map(|s| s.to_string()).collect(),
        modes: modes.iter().map(|s| s.to_string()).collect(),
        tests: tests.iter().map(|s| s.to_string()).collect(),
        timeout: 1800,
        verbose: false,
        feature_probe: false,
        bench: false,
        icount: None,
    };
    vec![
        lane(
            &["5.10", "6.1"],
            &["auto", "tracepoint"],
            &["kernel_events", "probe_modes", "tpm_device"],
        ),
        // Kprobe mode, which auto takes on no kernel of the lane, for its own tests (the
        // calls a kretprobe misses); 5.10 refuses it (docs/probes.md, "Known limits").
        lane(&["6.1"], &["kprobe"], &["kernel_events"]),
    ]
}

/// Whether `cargo xtask test` runs [`test_task_lanes`] (unless `SENSOR_VM_LANE=0`).
pub fn test_task_lane_enabled() -> bool {
    std::env::var("SENSOR_VM_LANE").as_deref() != Ok("0")
}

/// Whether `sensor-agent probe --probe-mode MODE` must succeed in every guest: a forced mode
/// the kernel refuses fails the lane.
const PROBE_MUST_PASS: bool = true;

/// Runs the lane; `build` first builds the agent (`cargo xtask build`), which `cargo xtask
/// test` has already done.
pub fn run(root: &Path, args: &Args, build: bool) -> Result<()> {
    let suites: Vec<&'static kernel::Suite> = if args.kernels.is_empty() {
        SUITES.iter().collect()
    } else {
        args.kernels
            .iter()
            .map(|k| {
                SUITES.iter().find(|s| s.name == k).with_context(|| {
                    let names: Vec<&str> = SUITES.iter().map(|s| s.name).collect();
                    format!("unknown kernel {k}: one of {}", names.join(", "))
                })
            })
            .collect::<Result<_>>()?
    };
    let modes = or_default(&args.modes, DEFAULT_MODES);
    for mode in &modes {
        if mode.is_empty()
            || !mode
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("bad mode {mode:?}");
        }
    }
    let wanted = match args.icount {
        Some(_) => Vec::new(),
        None => or_default(&args.tests, DEFAULT_TESTS),
    };
    if build {
        crate::build(root)?;
        crate::build_fault_injection(root)?;
    }
    let tests = test_executables(root, &wanted)?;
    let mirror = kernel::mirror()?;
    let cache = root.join("target/vm");
    guest::remove_stale_dirs();

    let mut reports = Vec::new();
    for suite in suites {
        let report = run_kernel(root, &cache, suite, &mirror, &modes, &tests, args);
        print_details(&report);
        reports.push(report);
        if guest::interrupted() {
            break;
        }
    }
    print_table(&reports);
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.name)
        .collect();
    if !failed.is_empty() {
        bail!("VM lane failed on kernel {}", failed.join(", "));
    }
    Ok(())
}

fn or_default(given: &[String], default: &[&str]) -> Vec<String> {
    if given.is_empty() {
        default.iter().map(|s| s.to_string()).collect()
    } else {
        given.to_vec()
    }
}

/// Builds the integration tests (as `cargo xtask test` builds them, so its artifacts are
/// reused) and returns the executables of the `wanted` targets of `sensor-tests`.
fn test_executables(root: &Path, wanted: &[String]) -> Result<Vec<(String, PathBuf)>> {
    eprintln!("xtask vm: building the integration tests (cargo test --no-run)");
    let out = crate::cargo(root)
        .args([
            "test",
            "--release",
            "--workspace",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("starting cargo test --no-run")?;
    if !out.status.success() {
        bail!("cargo test --no-run failed ({})", out.status);
    }
    let manifest = root.join("tests/Cargo.toml");
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact"
            || msg["profile"]["test"] != true
            || Path::new(msg["manifest_path"].as_str().unwrap_or_default()) != manifest
            || !msg["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"))
        {
            continue;
        }
        if let (Some(name), Some(exe)) =
            (msg["target"]["name"].as_str(), msg["executable"].as_str())
        {
            found.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    wanted
        .iter()
        .map(|w| {
            found
                .iter()
                .find(|(name, _)| name == w)
                .cloned()
                .with_context(|| {
                    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
                    format!(
                        "no integration test {w} in sensor-tests: one of {}",
                        names.join(", ")
                    )
                })
        })
        .collect()
}

/// What one kernel's guest did.
struct KernelReport {
    name: &'static str,
    /// `linux-image-… VERSION (uname -r)`, when the package was fetched.
    kernel: Option<String>,
    /// A reason the lane failed for this kernel before or outside the tests.
    problem: Option<String>,
    boot: Option<Duration>,
    elapsed: Option<Duration>,
    /// Config options from the package, then the guest's own lines (LSMs, TPM, bpftool).
    facts: Vec<String>,
    modes: Vec<ModeReport>,
    console_tail: Vec<String>,
    logs: PathBuf,
}

impl KernelReport {
    fn passed(&self) -> bool {
        self.problem.is_none() && self.modes.iter().all(ModeReport::passed)
    }
}

struct ModeReport {
    mode: String,
    probe: Probe,
    tests: Vec<TestReport>,
}

impl ModeReport {
    fn passed(&self) -> bool {
        self.tests.iter().all(TestReport::passed)
            && (!PROBE_MUST_PASS || matches!(self.probe, Probe::Hooks(_)))
    }
}

enum Probe {
    /// The guest never got to it.
    NotRun,
    /// The agent has no `probe` subcommand (yet).
    Unknown,
    /// `HOOK MODE` per line.
    Hooks(Vec<(String, String)>),
    /// Exit status and message.
    Refused(String, String),
}

impl Probe {
    fn read(dir: &Path) -> Probe {
        let Ok(rc) = fs::read_to_string(dir.join("probe.rc")) else {
            return Probe::NotRun;
        };
        let out = fs::read_to_string(dir.join("probe.out")).unwrap_or_default();
        if rc.trim() != "0" {
            if out.contains("unrecognized subcommand") {
                return Probe::Unknown;
            }
            return Probe::Refused(rc.trim().to_string(), out);
        }
        let hooks: Vec<(String, String)> = out
            .lines()
            .filter_map(|l| {
                // `PROBE MODE HOOKS`: the hooks column is for people.
                let mut w = l.split_whitespace();
                Some((w.next()?.to_string(), w.next()?.to_string()))
            })
            .collect();
        if hooks.is_empty() {
            return Probe::Refused("0".into(), format!("no `HOOK MODE` line in: {out}"));
        }
        Probe::Hooks(hooks)
    }

    fn summary(&self) -> String {
        match self {
            Probe::NotRun => "not run".into(),
            Probe::Unknown => "unknown".into(),
            Probe::Hooks(hooks) => hooks
                .iter()
                .map(|(h, m)| format!("{h}={m}"))
                .collect::<Vec<_>>()
                .join(" "),
            Probe::Refused(rc, out) => format!(
                "refused (exit {rc}): {}",
                out.lines().last().unwrap_or_default()
            ),
        }
    }
}

struct TestReport {
    name: String,
    /// None: the binary did not finish (guest ended or was killed first).
    exit: Option<String>,
    results: Vec<String>,
    passed: u64,
    failed: u64,
    time: Option<f64>,
    output: String,
}

impl TestReport {
    fn read(dir: &Path, name: &str) -> TestReport {
        let read = |ext: &str| fs::read_to_string(dir.join(format!("{name}.{ext}"))).ok();
        let output = read("out").unwrap_or_default();
        let results: Vec<String> = output
            .lines()
            .filter(|l| l.starts_with("test result:"))
            .map(str::to_string)
            .collect();
        let count = |what: &str| -> u64 {
            results
                .iter()
                .filter_map(|r| {
                    r.split(';').find_map(|part| {
                        let mut w = part.split_whitespace().rev();
                        (w.next()? == what)
                            .then(|| w.next()?.parse::<u64>().ok())
                            .flatten()
                    })
                })
                .sum()
        };
        // "START END" in the guest's uptime seconds.
        let time = read("time").and_then(|t| {
            let v: Vec<f64> = t
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            match v[..] {
                [start, end] => Some(end - start),
                _ => None,
            }
        });
        TestReport {
            name: name.to_string(),
            exit: read("rc").map(|r| r.trim().to_string()),
            passed: count("passed"),
            failed: count("failed"),
            results,
            time,
            output,
        }
    }

    fn passed(&self) -> bool {
        self.exit.as_deref() == Some("0") && self.failed == 0 && !self.results.is_empty()
    }
}

fn run_kernel(
    root: &Path,
    cache: &Path,
    suite: &'static kernel::Suite,
    mirror: &str,
    modes: &[String],
    tests: &[(String, PathBuf)],
    args: &Args,
) -> KernelReport {
    let logs = cache.join("logs").join(suite.name);
    let mut report = KernelReport {
        name: suite.name,
        kernel: None,
        problem: None,
        boot: None,
        elapsed: None,
        facts: Vec::new(),
        modes: Vec::new(),
        console_tail: Vec::new(),
        logs: logs.clone(),
    };
    let kernel = match kernel::fetch(cache, suite, mirror) {
        Ok(k) => k,
        Err(e) => {
            report.problem = Some(format!("no kernel: {e:#}"));
            return report;
        }
    };
    report.kernel = Some(format!(
        "{} {} ({})",
        kernel.package, kernel.version, kernel.release
    ));
    report.facts = kernel::config_facts(&kernel);
    let initramfs = match initramfs::build(&kernel) {
        Ok(p) => p,
        Err(e) => {
            report.problem = Some(format!("no initramfs: {e:#}"));
            return report;
        }
    };
    eprintln!(
        "xtask vm: {}: booting {} under TCG (at most {} s)",
        suite.name, kernel.release, args.timeout
    );
    let bench = root.join("xtask/bench/guest_overhead.sh");
    let plan = guest::Plan {
        kernel: &kernel,
        initramfs: &initramfs,
        agent: &root.join("target/release/sensor-agent"),
        tests_dir: &root.join("tests"),
        modes,
        tests,
        timeout: Duration::from_secs(args.timeout),
        verbose: args.verbose,
        feature_probe: args.feature_probe,
        bench: args.bench.then_some(bench.as_path()),
        icount: args.icount,
        logs,
    };
    let outcome = match guest::run(&plan) {
        Ok(o) => o,
        Err(e) => {
            report.problem = Some(format!("guest: {e:#}"));
            return report;
        }
    };
    report.boot = outcome.boot;
    report.elapsed = Some(outcome.elapsed);
    let console = fs::read_to_string(&outcome.console).unwrap_or_default();
    let lines: Vec<&str> = console.lines().collect();
    report.console_tail = lines[lines.len().saturating_sub(60)..]
        .iter()
        .map(|l| l.to_string())
        .collect();
    if let Ok(text) = fs::read_to_string(outcome.out.join("kernel.txt")) {
        report
            .facts
            .extend(text.lines().map(|l| format!("guest: {l}")));
    }
    if let Ok(text) = fs::read_to_string(outcome.out.join("features.txt")) {
        let wanted = ["kprobe", "tracepoint", "raw_tracepoint", "tracing", "lsm"];
        let types: Vec<String> = text
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("eBPF program_type ")?;
                let (kind, verdict) = rest.split_once(" is ")?;
                wanted.contains(&kind).then(|| {
                    format!(
                        "{kind}={}",
                        if verdict.starts_with("available") {
                            "yes"
                        } else {
                            "no"
                        }
                    )
                })
            })
            .collect();
        report
            .facts
            .push(format!("guest: bpftool program types: {}", types.join(" ")));
    }
    match outcome.end {
        End::Done => {}
        End::Stopped if outcome.boot.is_none() => {
            let qemu = fs::read_to_string(&outcome.qemu_log).unwrap_or_default();
            report.problem = Some(format!(
                "the guest did not boot{}",
                if qemu.trim().is_empty() {
                    String::new()
                } else {
                    format!(" (qemu: {})", qemu.trim())
                }
            ));
        }
        End::Stopped => report.problem = Some("the guest stopped before the run finished".into()),
        End::TimedOut => {
            report.problem = Some(format!("killed after {} s", args.timeout));
        }
    }
    for mode in modes {
        let dir = outcome.out.join(mode);
        report.modes.push(ModeReport {
            mode: mode.clone(),
            probe: Probe::read(&dir),
            tests: tests
                .iter()
                .map(|(name, _)| TestReport::read(&dir, name))
                .collect(),
        });
    }
    report
}

/// Each test binary's `test result:` lines and exit status; on a failure, what failed, the
/// console's last lines and where the logs are.
fn print_details(r: &KernelReport) {
    eprintln!();
    eprintln!(
        "== kernel {} {}",
        r.name,
        r.kernel.as_deref().unwrap_or("(not fetched)")
    );
    for fact in &r.facts {
        eprintln!("   {fact}");
    }
    if let Ok(bench) = fs::read_to_string(r.logs.join("out/bench.out")) {
        eprintln!("   bench (xtask/bench/guest_overhead.sh):");
        for line in bench.lines() {
            eprintln!("      | {line}");
        }
    }
    for m in &r.modes {
        eprintln!("   mode {}: probe: {}", m.mode, m.probe.summary());
        if let Probe::Refused(_, out) = &m.probe {
            for line in out.lines() {
                eprintln!("      | {line}");
            }
        }
        for t in &m.tests {
            eprintln!(
                "   mode {}: {}: exit {}; {}",
                m.mode,
                t.name,
                t.exit.as_deref().unwrap_or("none (did not finish)"),
                if t.results.is_empty() {
                    "no `test result:` line".to_string()
                } else {
                    t.results.join(" | ")
                }
            );
        }
    }
    if r.passed() {
        return;
    }
    if let Some(problem) = &r.problem {
        eprintln!("   FAILED: {problem}");
    }
    for m in &r.modes {
        for t in m.tests.iter().filter(|t| !t.passed()) {
            // cargo's failure section holds each failed test's panic (and the agent's
            // stderr the harness prints with it).
            let lines: Vec<&str> = t.output.lines().collect();
            let from = lines
                .iter()
                .position(|l| *l == "failures:")
                .unwrap_or(lines.len().saturating_sub(60));
            let shown = &lines[from..];
            let shown = &shown[..shown.len().min(400)];
            eprintln!(
                "   --- mode {}: {} output (from failures:) ---",
                m.mode, t.name
            );
            for line in shown {
                eprintln!("   | {line}");
            }
        }
    }
    if !r.console_tail.is_empty() {
        eprintln!(
            "   --- last {} lines of the console ---",
            r.console_tail.len()
        );
        for line in &r.console_tail {
            eprintln!("   | {line}");
        }
    }
    eprintln!("   logs: {}", r.logs.display());
}

fn print_table(reports: &[KernelReport]) {
    let secs = |d: Option<f64>| match d {
        Some(s) => format!("{}m{:02}s", (s as u64) / 60, (s as u64) % 60),
        None => "-".into(),
    };
    let mut rows = vec![[
        "kernel".to_string(),
        "mode".into(),
        "result".into(),
        "boot".into(),
        "passed".into(),
        "failed".into(),
        "time".into(),
        "probe (hook=mode)".into(),
    ]];
    for r in reports {
        let boot = r
            .boot
            .map(|b| format!("{:.1}s", b.as_secs_f64()))
            .unwrap_or_else(|| "-".into());
        if r.modes.is_empty() {
            rows.push([
                r.name.to_string(),
                "-".into(),
                "FAILED".into(),
                boot.clone(),
                "-".into(),
                "-".into(),
                secs(r.elapsed.map(|e| e.as_secs_f64())),
                r.problem.clone().unwrap_or_default(),
            ]);
        }
        for m in &r.modes {
            let time: Option<f64> = m.tests.iter().map(|t| t.time).sum();
            let result = if !m.passed() {
                "FAILED"
            } else if r.problem.is_some() {
                "FAILED (guest)"
            } else {
                "ok"
            };
            rows.push([
                r.name.to_string(),
                m.mode.clone(),
                result.into(),
                boot.clone(),
                m.tests.iter().map(|t| t.passed).sum::<u64>().to_string(),
                m.tests.iter().map(|t| t.failed).sum::<u64>().to_string(),
                secs(time),
                m.probe.summary(),
            ]);
        }
    }
    let mut widths = [0; 8];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    eprintln!();
    eprintln!("VM lane:");
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        eprintln!("  {}", line.join("  ").trim_end());
    }
    eprintln!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_test_results() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("k.out"),
            "running 2 tests\ntest result: FAILED. 40 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s\n",
        )
        .unwrap();
        fs::write(dir.path().join("k.rc"), "101\n").unwrap();
        fs::write(dir.path().join("k.time"), "10.5 70.25\n").unwrap();
        let t = TestReport::read(dir.path(), "k");
        assert_eq!((t.passed, t.failed), (40, 2));
        assert_eq!(t.exit.as_deref(), Some("101"));
        assert_eq!(t.time, Some(59.75));
        assert!(!t.passed());
    }
}
